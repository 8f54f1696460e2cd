"""sessionmesh: a message bus for AI coding-agent sessions."""

__version__ = "0.1.0"
