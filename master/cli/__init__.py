"""Tools a user runs against a master: status and results."""
