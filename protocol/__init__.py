"""The wire contract shared by agent, hub and TUI: NATS subjects, message schemas, the error shape.

Agent, hub and TUI each import this package and never one another.
"""

SCHEMA_VERSION = 1
