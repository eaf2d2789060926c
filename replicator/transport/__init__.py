"""replicator.transport"""
