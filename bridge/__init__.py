"""The bridge: stream rows to Kafka with nothing lost, Kafka topics into the functions.

`metro bridge` runs it (bridge.runner); `metro bridge --status` reports on it
(bridge.status).
"""
