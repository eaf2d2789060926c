"""Live mirror: keep a plain directory identical to the latest snapshot of one source.

The receiving site can keep, next to the repository, a plain copy of the
replicated tree (for applications that read files, not snapshots).  This
module owns that copy's update discipline.  What must not change:

* **Never a half-written file.**  Every file is written through
  restore/writer.py with ``fsync_each=True``: a temporary name in the same
  directory, fsync, metadata, rename, directory fsync.  After a crash at any
  moment every file of the mirror is either its previous or its new version
  (plus, at worst, temporary files, removed at the next update).
* **The mirror only ever moves forward to a committed snapshot.**  A state file
  beside the mirror (``.<DIR name>.mirror-state`` in DIR's parent, so it is
  never part of the tree) records the repository, the source, the snapshot
  fully mirrored and, while an update runs, the snapshots it may partly hold.
* **Incremental by merkle diff.**  With a recorded snapshot, only the paths
  that ``repo.merkle.diff_trees`` reports between it (and every snapshot an
  interrupted update may have partly applied) and the new one are touched, so
  an update reads only the changed branches.  Without a state (first run,
  another repository) a full walk compares the disk with the snapshot: files
  whose kind, size, mtime and mode already match are kept (rsync's quick check).
* An update that fails (I/O error, missing chunk) leaves the state "dirty";
  the next update starts from the union of the possible states, so it repairs
  whatever the failed one left, whatever happened in between.

It never prints, logs or exits; results go to the caller (a callback for the
background worker).
"""
from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from replicator.errors import IntegrityError
from replicator.format.entry import KIND_DIR, KIND_FILE, Entry
from replicator.format.snapshot import Snapshot
from replicator.repo.merkle import ADDED, MODIFIED, REMOVED, diff_trees
from replicator.repo.repository import Repository
from replicator.restore.writer import TMP_PREFIX, restore, validate_relpath
from replicator.store import atomic

STATE_VERSION = 1
MAX_PENDING = 16  # more interrupted updates than this: fall back to a full walk
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def state_path(target: str) -> str:
    """Where the state of the mirror at ``target`` is kept: a hidden file beside it."""
    target = os.path.abspath(target)
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.mirror-state")


def load_state(target: str) -> dict | None:
    """:returns: the recorded state, or None when missing or unreadable (then a full walk is done)."""
    try:
        with open(state_path(target), "rb") as f:
            state = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return None
    return state


def _save_state(target: str, state: dict) -> None:
    """Atomically replace the state file (store/atomic.py)."""
    atomic.replace(state_path(target), json.dumps(dict(state, version=STATE_VERSION), sort_keys=True).encode())


@dataclass
class MirrorReport:
    snapshot: str = ""
    source: str = ""
    mode: str = ""  # "unchanged", "diff" or "full"
    changes: int = 0  # paths found different
    files: int = 0  # files (re)written
    removed: int = 0  # paths removed (a directory counts once)
    bytes: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# --- planning ------------------------------------------------------------------------
def _ancestors(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def _select(repo: Repository, tree_id: bytes, wanted: set[str], prefixes: set[str],
            parent: str = "") -> Iterator[Entry]:
    """Entries of ``wanted`` under ``tree_id`` in pre-order, reading only trees on the way to them (no recursion)."""
    stack = [iter(repo.read_tree(tree_id, parent))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        e = item.entry
        if e.path in wanted:
            yield e
        if e.kind == KIND_DIR and e.path in prefixes:
            stack.append(iter(repo.read_tree(item.subtree, e.path)))


def _plan_diff(repo: Repository, bases: list[bytes], new: bytes) -> tuple[list[Entry], list[str], int]:
    """:returns: (entries to write, in pre-order; paths to remove; number of changed paths)."""
    present: set[str] = set()
    removed: set[str] = set()
    for base in dict.fromkeys(bases):
        for change in diff_trees(repo.read_tree, base, new):
            if change.kind in (ADDED, MODIFIED):
                present.add(change.path)
            elif change.kind == REMOVED:
                removed.add(change.path)
    removed -= present  # a type change is removed then added: keep it as "write"
    # A directory whose entries change gets a new mtime from the kernel: restore its metadata too.
    parents = {p.rsplit("/", 1)[0] for p in present | removed if "/" in p}
    wanted = present | (parents - removed)
    prefixes = {a for p in wanted for a in _ancestors(p)}
    return list(_select(repo, new, wanted, prefixes)), sorted(removed), len(present | removed)


def _quick_same(st: os.stat_result, e: Entry) -> bool:
    if e.kind == KIND_FILE and not e.link_to:
        return (stat.S_ISREG(st.st_mode) and st.st_size == e.size and st.st_mtime_ns == e.mtime_ns
                and stat.S_IMODE(st.st_mode) == e.mode & 0o7777)
    return False


def _plan_full(repo: Repository, new: bytes, target: str) -> tuple[list[Entry], list[str], int]:
    entries = list(repo.walk_tree(new))
    by_path = {e.path: e for e in entries}
    removed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(target):
        rel_dir = os.path.relpath(dirpath, target)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        keep_dirs = []
        for name in dirnames + filenames:
            rel = os.fsdecode(name) if not rel_dir else f"{rel_dir}/{os.fsdecode(name)}"
            if rel not in by_path:
                removed.append(rel)
            elif name in dirnames and by_path[rel].kind == KIND_DIR:
                keep_dirs.append(name)
        dirnames[:] = keep_dirs  # never descend into what goes (os.walk does not follow symlinks)
    write = []
    for e in entries:
        try:
            st = os.lstat(os.path.join(target, e.path))
        except OSError:
            write.append(e)
            continue
        if not _quick_same(st, e):
            write.append(e)
    return write, sorted(removed), len(removed) + sum(1 for e in write if e.kind != KIND_DIR)


# --- applying --------------------------------------------------------------------------
def _open_parent(root_fd: int, path: str) -> tuple[int, str] | None:
    """(fd of the real directory holding ``path``, last name), or None when a component is not a directory."""
    parts = path.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError:
        os.close(fd)
        return None
    return fd, parts[-1]


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def remove_tree(dir_fd: int, name: str) -> bool:
    """Remove ``name`` (a whole tree for a directory) without following any symlink and without recursion:
    one directory descriptor open at a time, going back up through ``..`` only when it is the directory we
    came from.  :returns: whether it existed.  :raises OSError: a directory moved meanwhile."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return True
    names = [name]  # the path from dir_fd down to the current directory
    idents: list[tuple[int, int]] = []  # (device, inode) of each directory on that path
    cur = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    idents.append(_ident(cur))
    try:
        while True:
            if stat.S_IMODE(os.fstat(cur).st_mode) & 0o700 != 0o700:
                os.fchmod(cur, 0o700)
            with os.scandir(cur) as it:
                children = [(c.name, c.is_dir(follow_symlinks=False)) for c in it]
            sub = next((n for n, is_dir in children if is_dir), None)
            for n, is_dir in children:
                if not is_dir:
                    os.unlink(n, dir_fd=cur)
            if sub is not None:
                down = os.open(sub, _DIR_FLAGS, dir_fd=cur)
                os.close(cur)
                cur = down
                names.append(sub)
                idents.append(_ident(cur))
                continue
            done = names.pop()
            idents.pop()
            if not names:
                os.close(cur)
                cur = -1
                os.rmdir(done, dir_fd=dir_fd)
                return True
            up = os.open("..", _DIR_FLAGS, dir_fd=cur)
            if _ident(up) != idents[-1]:
                os.close(up)
                raise OSError(errno.ESTALE, f"{name}: a directory moved while it was being removed")
            os.close(cur)
            cur = up
            os.rmdir(done, dir_fd=cur)
    finally:
        if cur >= 0:
            os.close(cur)


def _remove_paths(target: str, paths: list[str], report: MirrorReport) -> None:
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        gone: set[str] = set()
        for path in paths:  # sorted: a directory comes before its contents
            if validate_relpath(path) is not None or any(a in gone for a in _ancestors(path)):
                continue
            opened = _open_parent(root_fd, path)
            if opened is None:
                continue  # its directory is gone or is not a directory: nothing of ours there
            fd, name = opened
            try:
                if remove_tree(fd, name):
                    report.removed += 1
                    gone.add(path)
                    os.fsync(fd)
            except OSError as exc:
                report.errors.append((path, f"cannot remove: {exc.strerror or exc}"))
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)


def _clear_conflicts(target: str, entries: list[Entry], report: MirrorReport) -> None:
    """Remove what stands where an entry of another kind must go (a directory where a file goes, ...)."""
    clash = []
    for e in entries:
        try:
            st = os.lstat(os.path.join(target, e.path))
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) != (e.kind == KIND_DIR):  # lstat: a symlink is never a directory
            clash.append(e.path)
    if clash:
        before = report.removed
        _remove_paths(target, sorted(clash), report)
        report.removed = before  # replaced, not removed


def _clean_temporaries(target: str) -> None:
    """Temporary files an interrupted update left (they never carry a final name)."""
    for dirpath, _dirs, files in os.walk(target):
        for fn in files:
            if fn.startswith(TMP_PREFIX):
                try:
                    os.unlink(os.path.join(dirpath, fn))
                except OSError:
                    pass


def mirror_snapshot(repo: Repository, snap: Snapshot, target: str, *,
                    restore_owner: bool | None = None) -> MirrorReport:
    """Bring the directory ``target`` to exactly the content and metadata of ``snap``.

    :returns: a MirrorReport; ``ok`` False means the mirror may still hold
        older versions of some files (each one whole) and the next call repairs it.
    :raises IntegrityError: the new snapshot's trees cannot be read (nothing was changed).
    """
    target = os.path.abspath(target)
    report = MirrorReport(snapshot=snap.id, source=snap.source)
    state = load_state(target)
    if state is not None and (state.get("repository") != repo.id or not os.path.isdir(target)):
        state = None
    if state is not None and state.get("snapshot") == snap.id and not state.get("dirty"):
        report.mode = "unchanged"
        return report
    plan = None
    bases: list[bytes] = []
    if state is not None and state.get("tree") and len(state.get("pending", [])) <= MAX_PENDING:
        try:
            bases = [bytes.fromhex(t) for t in [state["tree"], *state.get("pending", [])]]
            plan = _plan_diff(repo, bases, snap.tree)
            report.mode = "diff"
        except (IntegrityError, ValueError, TypeError):
            plan = None  # an old tree is gone (pruned) or damaged: compare with the disk instead
    os.makedirs(target, mode=0o700, exist_ok=True)
    if plan is None:
        bases = []
        plan = _plan_full(repo, snap.tree, target)
        report.mode = "full"
    write, removed, report.changes = plan
    dirty = {"repository": repo.id, "source": snap.source, "dirty": True,
             "snapshot": state.get("snapshot") if bases and state is not None else None,
             "tree": bases[0].hex() if bases else None,
             "pending": [b.hex() for b in bases[1:]] + [snap.tree.hex()] if bases else []}
    was_dirty = bool(state and state.get("dirty"))
    _save_state(target, dirty)  # before the first change: a crash from here on is repaired next time
    if was_dirty:
        _clean_temporaries(target)
    _remove_paths(target, removed, report)
    _clear_conflicts(target, write, report)

    def read_file(entry: Entry) -> Iterator[bytes]:
        for chunk_id in entry.chunks:
            yield repo.read_blob(chunk_id)

    rr = restore(target, write, read_file, restore_owner=restore_owner, fsync_each=True)
    report.files, report.bytes = rr.files + rr.hardlinks, rr.bytes
    report.errors += rr.errors + rr.refused
    report.warnings += rr.warnings
    if report.ok:
        _save_state(target, {"repository": repo.id, "source": snap.source, "snapshot": snap.id,
                             "tree": snap.tree.hex(), "pending": [], "dirty": False})
    return report


def latest_snapshot(repo: Repository, source: str | None) -> Snapshot | None:
    """The highest generation of ``source`` (None: of the repository's only source); None if there is none.

    Never chosen by time: the snapshots' clocks are the primary's and can be wrong.
    Damaged snapshots are skipped (verify names them).
    :raises RepositoryError: ``source`` is None and the repository holds several sources.
    :raises IntegrityError: two snapshots claim the source's highest generation.
    """
    return repo.read_snapshots().latest(source)


class MirrorWorker:
    """Keeps one mirror up to date in a background thread, one update at a time.

    ``request()`` never blocks: it queues an update unless one is already
    queued (updates always go to the latest snapshot, so requests coalesce).
    Results go to ``on_done(report, error)``; a failure is retried at the next
    request.
    """

    def __init__(self, repo: Repository, target: str, *, source: str | None = None,
                 on_done: Callable[[MirrorReport | None, BaseException | None], None] | None = None,
                 restore_owner: bool | None = None) -> None:
        self.repo = repo
        self.target = os.path.abspath(target)
        self.source = source
        self.on_done = on_done
        self.restore_owner = restore_owner
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror")
        self._lock = threading.Lock()
        self._queued = False
        self.updates = 0

    def request(self) -> None:
        with self._lock:
            if self._queued:
                return
            self._queued = True
        self._pool.submit(self._run)

    def _run(self) -> None:
        with self._lock:
            self._queued = False
        report, error = None, None
        try:
            report = self.update()
        except Exception as exc:  # noqa: BLE001 - handed to the caller; retried at the next request
            error = exc
        self.updates += 1
        if self.on_done is not None:
            try:
                self.on_done(report, error)
            except Exception:  # noqa: BLE001 - a logging callback must not kill the worker
                pass

    def update(self) -> MirrorReport | None:
        """Mirror the latest snapshot now (in the calling thread). :returns: None when there is none yet."""
        self.repo.catch_up()  # packs written since the last update
        source = self.source
        if source is None:
            state = load_state(self.target)
            source = state.get("source") if state and state.get("repository") == self.repo.id else None
        snap = latest_snapshot(self.repo, source)
        if snap is None:
            return None
        return mirror_snapshot(self.repo, snap, self.target, restore_owner=self.restore_owner)

    def close(self) -> None:
        """Wait for the running update (a queued one is dropped) and stop the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)
