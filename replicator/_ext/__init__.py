"""Compiled modules built from ext/ land here (see setup.py)."""
