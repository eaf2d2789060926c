"""Plain-Python reference implementations: the executable specs the native code is checked against."""
