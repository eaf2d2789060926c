"""What the CLI and the daemon share: configuration, logs, audit log, status file, passphrases, destinations."""
