"""replicator.repo"""
