"""Change notification for continuous jobs: inotify through watchdog.

Owns the only import of watchdog.  ``SourceWatcher`` calls ``on_change(path)``
for every event that can change what a sync would store (created, modified,
deleted, moved, closed after writing), never for reads: the sync itself opens
every changed file, and reacting to that would loop.  Watching is a hint, not
a guarantee (the kernel queue can overflow, watches can run out): the job's
periodic rescan is what guarantees convergence.
"""
from __future__ import annotations

from collections.abc import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

RELEVANT = frozenset({"created", "modified", "deleted", "moved", "closed"})


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in RELEVANT:
            self._on_change(str(event.src_path))


class SourceWatcher:
    """Recursive watch of one directory.  ``start()`` may raise OSError (e.g. no inotify watches left)."""

    def __init__(self, root: str, on_change: Callable[[str], None]) -> None:
        self.root = root
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(_Handler(on_change), root, recursive=True)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(5)
