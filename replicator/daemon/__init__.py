"""replicator.daemon"""
