"""Dante: an event-sourced GPU rental marketplace on NATS JetStream."""

__version__ = "0.1.0"
