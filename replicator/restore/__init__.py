"""The way back: restoring a snapshot into a directory, and the live mirror at the secondary."""
