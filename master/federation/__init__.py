"""One read-only view over several masters: `python -m master.federation --masters a=URL,b=URL`.

`view.py` (pure: the masters' documents merged, each master's health), `server.py` (a polling thread
per master, and the HTTP/XML-RPC server: dashboard, counts, results by camera name, a pass-through
for pictures and clips). docs/SCALING.md.
"""
