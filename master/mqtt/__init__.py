"""MQTT for the master: events, counts and health on a broker, Home Assistant discovery, commands.

`topics.py` (pure: names, payloads, discovery configs), `outbox.py` (pure: the bounded outbox and the
reconnect backoff), `config.py` (the [mqtt] settings), `client.py` (the one connection, a Component),
`bridge.py` (the master's state to messages, commands to the master, a Component). docs/MQTT.md.
"""
