"""How the master is reached: one HTTP server with XML-RPC and the binary task API."""
