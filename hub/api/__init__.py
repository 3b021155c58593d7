"""The operator API: body validation, verb handlers (pure store calls), the NATS service."""
