"""replicator: secure two-site replication engine."""
__version__ = "0.4.0"
