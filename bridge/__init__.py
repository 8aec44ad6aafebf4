"""The bridge: stream rows to Kafka with nothing lost, Kafka topics into the functions.

`metro bridge` runs it (metro.bridge.runner); `metro bridge --status` reports on it
(metro.bridge.status).
"""
