"""The contract between the fieldlink agent and server: protocol, topics, ids, signing."""

__version__ = "0.1.0"
