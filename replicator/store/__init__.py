"""Storage: named immutable objects and the local bookkeeping beside them (index, lock, atomic files)."""
