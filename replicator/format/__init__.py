"""Byte layouts exactly as docs/FORMAT.md specifies them: encode, decode, validate; no I/O."""
