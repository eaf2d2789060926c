"""replicator: secure two-site replication engine."""
__version__ = "0.1.0"
