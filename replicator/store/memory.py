"""In-memory Storage, for tests and for the conformance suite."""
from __future__ import annotations

import threading
from collections.abc import Iterator

from replicator.errors import ObjectNotFound
from replicator.store.storage import check_name


class MemoryStorage:
    def __init__(self) -> None:
        self.location = "memory:"
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, name: str, data: bytes | bytearray | memoryview, *, overwrite: bool = False) -> None:
        check_name(name)
        with self._lock:
            if name in self.objects and not overwrite:
                raise FileExistsError(name)
            self.objects[name] = bytes(data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        try:
            data = self.objects[name]
        except KeyError:
            raise ObjectNotFound(name) from None
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def size(self, name: str) -> int:
        check_name(name)
        try:
            return len(self.objects[name])
        except KeyError:
            raise ObjectNotFound(name) from None

    def exists(self, name: str) -> bool:
        return check_name(name) in self.objects

    def list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            # Like a directory listing: "data" and "data/" both mean the folder data/.
            folder = prefix.strip("/")
            names = [n for n in self.objects if not folder or n.startswith(folder + "/")]
        yield from names

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self.objects.pop(name, None)

    def clean_temporaries(self) -> int:
        return 0  # a put is atomic under the lock: nothing half-written can exist

    def close(self) -> None:
        pass
