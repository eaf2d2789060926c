"""replicator.core"""
