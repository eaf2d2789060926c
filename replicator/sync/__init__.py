"""replicator.sync"""
