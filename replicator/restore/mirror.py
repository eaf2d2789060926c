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
* **Only the mirror's own directory.**  A directory that is not empty and has
  no mirror state beside it (keys, configuration, another application's data
  named by mistake) is refused, untouched, unless the caller adopts it
  (``adopt=True``: its content is then replaced by the snapshot's).
* **Stops within a moment.**  With a ``stop`` event set, an update ends
  between two files, or between two chunks of a big one (that file keeps its
  old version); the state stays dirty and the next update finishes the job.
* **Never destroys a local change.**  restore/mirror_records.py remembers the
  (size, mtime_ns, inode, ctime_ns) of every path the mirror wrote.  A file
  that is not what the mirror wrote (changed or created by someone else, an
  application writing into the mirror during a failover) is never
  overwritten or removed: the report names it (``kept_local_changes``), every
  later update names it again, until a snapshot brings exactly that file
  (committed from this site) or the caller discards local changes
  (``discard_local=True``: a full walk that makes the directory equal to the
  snapshot).  A file an interrupted update wrote before it could record it is
  recognised by its match with the snapshots that update was applying.

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

from replicator.errors import IntegrityError, UsageError
from replicator.format.entry import KIND_DIR, KIND_FILE, Entry
from replicator.format.snapshot import Snapshot
from replicator.repo.merkle import ADDED, MODIFIED, REMOVED, diff_trees
from replicator.repo.repository import Repository
from replicator.restore.mirror_guard import Guard, Records, guard_writes, name_strays, record
from replicator.restore.writer import TMP_PREFIX, quick_same, restore, validate_relpath
from replicator.store import atomic

STATE_VERSION = 1
MAX_PENDING = 16  # more interrupted updates than this: fall back to a full walk
STOPPED = "mirror update stopped"  # the error restore records for the file a stop interrupted (filtered out)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Stopped(Exception):
    """Internal: raised in read_file when the stop event is set; restore fails that one file (its old version stays)."""


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


def check_target(target: str, adopt: bool = False) -> str | None:
    """Whether the mirror may work in ``target``: missing, empty, or with its state beside it (or adopted).

    Never lists more of the directory than its first names and never changes anything.
    :returns: None when it may, else the one-line reason it may not.
    """
    target = os.path.abspath(target)
    if adopt or load_state(target) is not None:
        return None
    try:
        with os.scandir(target) as it:
            first = next((e.name for e in it), None)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return f"{target} is not a directory: refused, nothing changed"
    except OSError as exc:
        return f"cannot read {target}: {exc.strerror or exc}: refused, nothing changed"
    if first is None:
        return None
    return (f"{target} is not empty (it holds {first!r}) and has no mirror state beside it: refused, "
            "nothing changed; adopt it only if it is an earlier copy of this mirror (its content is then "
            "replaced by the snapshot's)")


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
    #: paths not overwritten or removed because the file there is not what the mirror wrote (sorted)
    kept_local_changes: list[str] = field(default_factory=list)
    stopped: bool = False  # the stop event ended the update early: the next one finishes it

    @property
    def ok(self) -> bool:
        return not self.errors and not self.stopped


# --- planning ------------------------------------------------------------------------
@dataclass
class _Plan:
    write: list[Entry]  # in pre-order
    removed: list[str]  # sorted: a directory before its contents
    changes: int
    listing: dict[str, set[str]] | None = None  # diff: names in the snapshot of each directory touched
    every: list[Entry] | None = None  # full: every entry of the snapshot


def _ancestors(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def _select(repo: Repository, tree_id: bytes, wanted: set[str], prefixes: set[str],
            parent: str = "", listing: dict[str, set[str]] | None = None) -> Iterator[Entry]:
    """Entries of ``wanted`` under ``tree_id`` in pre-order, reading only trees on the way to them (no recursion).

    ``listing``: for each directory it names that is read on the way, the names of its entries are added.
    """
    stack = [(iter(repo.read_tree(tree_id, parent)), parent)]
    while stack:
        items, dirpath = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        e = item.entry
        if listing is not None and dirpath in listing:
            listing[dirpath].add(e.name)
        if e.path in wanted:
            yield e
        if e.kind == KIND_DIR and e.path in prefixes:
            stack.append((iter(repo.read_tree(item.subtree, e.path)), e.path))


def _entry_at(repo: Repository, tree: bytes, path: str) -> Entry | None:
    """The entry at ``path`` in ``tree``; None when absent or unreadable (never raises)."""
    try:
        return next(_select(repo, tree, {path}, set(_ancestors(path))), None)
    except (IntegrityError, ValueError, KeyError, OSError):
        return None


def _plan_diff(repo: Repository, bases: list[bytes], new: bytes, recheck: set[str]) -> _Plan:
    """The paths changed from any of ``bases`` to ``new``, plus ``recheck`` (the local changes kept last time)."""
    present: set[str] = set()
    removed: set[str] = set()
    for base in dict.fromkeys(bases):
        for change in diff_trees(repo.read_tree, base, new):
            if change.kind in (ADDED, MODIFIED):
                present.add(change.path)
            elif change.kind == REMOVED:
                removed.add(change.path)
    removed -= present  # a type change is removed then added: keep it as "write"
    changes = len(present | removed)
    # A directory whose entries change gets a new mtime from the kernel: restore its metadata too.
    parents = {p.rsplit("/", 1)[0] for p in present | removed | recheck if "/" in p}
    wanted = present | (parents - removed) | recheck
    scan = (parents - removed) | {""}  # directories where new files by someone else are looked for
    prefixes = {a for p in wanted for a in _ancestors(p)} | (scan - {""})
    listing: dict[str, set[str]] = {d: set() for d in scan}
    write = list(_select(repo, new, wanted, prefixes, listing=listing))
    found = {e.path: e for e in write}
    removed |= {p for p in recheck if p not in found}  # a kept path the snapshot no longer has
    listing = {d: names for d, names in listing.items() if d == "" or (d in found and found[d].kind == KIND_DIR)}
    return _Plan(write, sorted(removed), changes, listing=listing)


def _quick_same(st: os.stat_result, e: Entry) -> bool:
    """A plain file already as the snapshot has it (hard links and symlinks are always written again)."""
    return e.kind == KIND_FILE and not e.link_to and quick_same(st, e)


def _plan_full(repo: Repository, new: bytes, target: str) -> _Plan:
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
    changes = len(removed) + sum(1 for e in write if e.kind != KIND_DIR)
    return _Plan(write, sorted(removed), changes, every=entries)


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


def remove_tree(dir_fd: int, name: str, keep: Callable[[str, os.stat_result], bool] | None = None,
                path: str = "") -> bool:
    """Remove ``name`` (a whole tree for a directory) without following any symlink and without recursion:
    one directory descriptor open at a time, going back up through ``..`` only when it is the directory we
    came from.

    ``keep(path, stat)``: called for each non-directory (``path`` below ``path``, the path of ``name``);
    True leaves it in place, and the directories holding it stay.
    :returns: whether it existed.  :raises OSError: a directory moved meanwhile."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        if keep is None or not keep(path or name, st):
            os.unlink(name, dir_fd=dir_fd)
        return True
    names = [name]  # the path from dir_fd down to the current directory
    idents: list[tuple[int, int]] = []  # (device, inode) of each directory on that path
    held: list[bool] = [False]  # whether something kept lies below each directory on that path
    done_dirs: list[set[str]] = [set()]  # subdirectories of each one left in place (they hold kept files)
    cur = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    idents.append(_ident(cur))
    try:
        while True:
            if stat.S_IMODE(os.fstat(cur).st_mode) & 0o700 != 0o700:
                os.fchmod(cur, 0o700)
            with os.scandir(cur) as it:
                children = [(c.name, c.is_dir(follow_symlinks=False)) for c in it]
            sub = next((n for n, is_dir in children if is_dir and n not in done_dirs[-1]), None)
            for n, is_dir in children:
                if is_dir:
                    continue
                if keep is not None and keep("/".join([path or name, *names[1:], n]),
                                             os.stat(n, dir_fd=cur, follow_symlinks=False)):
                    held[-1] = True
                    continue
                os.unlink(n, dir_fd=cur)
            if sub is not None:
                down = os.open(sub, _DIR_FLAGS, dir_fd=cur)
                os.close(cur)
                cur = down
                names.append(sub)
                idents.append(_ident(cur))
                held.append(False)
                done_dirs.append(set())
                continue
            done = names.pop()
            idents.pop()
            was_held = held.pop()
            done_dirs.pop()
            if not names:
                os.close(cur)
                cur = -1
                if not was_held:
                    os.rmdir(done, dir_fd=dir_fd)
                return True
            up = os.open("..", _DIR_FLAGS, dir_fd=cur)
            if _ident(up) != idents[-1]:
                os.close(up)
                raise OSError(errno.ESTALE, f"{name}: a directory moved while it was being removed")
            os.close(cur)
            cur = up
            if was_held:
                held[-1] = True
                done_dirs[-1].add(done)
            else:
                os.rmdir(done, dir_fd=cur)
    finally:
        if cur >= 0:
            os.close(cur)


def _remove_paths(root_fd: int, paths: list[str], report: MirrorReport, guard: Guard,
                  stop: threading.Event | None) -> set[str]:
    """Remove ``paths`` (sorted), leaving what is not the mirror's.  Checks ``stop`` between paths.

    :returns: the paths where something was kept (they still exist).
    """
    gone: set[str] = set()
    held: set[str] = set()
    for path in paths:  # sorted: a directory comes before its contents
        if stop is not None and stop.is_set():
            report.stopped = True
            break
        if validate_relpath(path) is not None or any(a in gone for a in _ancestors(path)):
            continue
        opened = _open_parent(root_fd, path)
        if opened is None:
            continue  # its directory is gone or is not a directory: nothing of ours there
        fd, name = opened
        kept_before = guard.held
        try:
            if remove_tree(fd, name, guard.keep, path):
                if guard.held == kept_before:
                    report.removed += 1
                    gone.add(path)
                os.fsync(fd)
            guard.records.forget(path)
        except OSError as exc:
            report.errors.append((path, f"cannot remove: {exc.strerror or exc}"))
        finally:
            os.close(fd)
        if guard.held > kept_before:
            held.add(path)
    return held


def _clean_temporaries(target: str) -> None:
    """Temporary files an interrupted update left (they never carry a final name)."""
    for dirpath, _dirs, files in os.walk(target):
        for fn in files:
            if fn.startswith(TMP_PREFIX):
                try:
                    os.unlink(os.path.join(dirpath, fn))
                except OSError:
                    pass


def mirror_snapshot(repo: Repository, snap: Snapshot, target: str, *, restore_owner: bool | None = None,
                    adopt: bool = False, discard_local: bool = False,
                    stop: threading.Event | None = None) -> MirrorReport:
    """Bring the directory ``target`` to the content and metadata of ``snap``, except local changes.

    :param adopt: work in ``target`` even when it is not empty and has no mirror state (its content is then
        replaced by the snapshot's); else such a directory is refused.
    :param discard_local: overwrite and remove local changes too (a full walk): the directory then equals the
        snapshot exactly.
    :param stop: when set, the update ends between two files (or two chunks of one), ``report.stopped``.
    :returns: a MirrorReport; ``ok`` False means the mirror may still hold
        older versions of some files (each one whole) and the next call repairs it.
        ``kept_local_changes`` names the files left as they are because the mirror did not write them.
    :raises UsageError: ``target`` is not the mirror's (check_target; nothing was changed).
    :raises IntegrityError: the new snapshot's trees cannot be read (nothing was changed).
    """
    target = os.path.abspath(target)
    reason = check_target(target, adopt)
    if reason is not None:
        raise UsageError(f"mirror: {reason}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    records = Records(target)
    try:
        return _update(repo, snap, target, records, restore_owner=restore_owner, discard_local=discard_local,
                       stop=stop)
    finally:
        records.close()


def _plan(repo: Repository, snap: Snapshot, target: str, state: dict | None, trusted: bool,
          recheck: set[str], report: MirrorReport) -> tuple[_Plan, list[bytes]]:
    """A diff from the recorded state when there is one (and the disk is not trusted), else a full walk."""
    if not trusted and state is not None and state.get("tree") and len(state.get("pending", [])) <= MAX_PENDING:
        try:
            bases = [bytes.fromhex(t) for t in [state["tree"], *state.get("pending", [])]]
            plan = _plan_diff(repo, bases, snap.tree, recheck)
            report.mode = "diff"
            return plan, bases
        except (IntegrityError, ValueError, TypeError):
            pass  # an old tree is gone (pruned) or damaged: compare with the disk instead
    report.mode = "full"
    return _plan_full(repo, snap.tree, target), []


def _pending_trees(state: dict | None) -> list[bytes]:
    """The trees an interrupted update (dirty state) may have partly written; never raises."""
    if not state or not state.get("dirty"):
        return []
    try:
        return [bytes.fromhex(t) for t in state.get("pending", [])][-MAX_PENDING:]
    except (ValueError, TypeError):
        return []


def _update(repo: Repository, snap: Snapshot, target: str, records: Records, *, restore_owner: bool | None,
            discard_local: bool, stop: threading.Event | None) -> MirrorReport:
    report = MirrorReport(snapshot=snap.id, source=snap.source)
    raw = load_state(target)
    state = raw if raw is not None and raw.get("repository") == repo.id and os.path.isdir(target) else None
    had_records = bool(raw and raw.get("records"))
    # Without records (a first update, an adopted directory, an older mirror) the disk is the mirror's.
    trusted = discard_local or not had_records
    local = set(records.local())
    if state is not None and state.get("snapshot") == snap.id and not state.get("dirty") and not discard_local:
        report.mode = "unchanged"
        report.kept_local_changes = sorted(local)
        return report
    plan, bases = _plan(repo, snap, target, state, trusted, local, report)
    report.changes = plan.changes
    _save_state(target, {"repository": repo.id, "source": snap.source, "dirty": True, "records": had_records,
                         "snapshot": state.get("snapshot") if bases and state is not None else None,
                         "tree": bases[0].hex() if bases else None,
                         "pending": [b.hex() for b in bases[1:]] + [snap.tree.hex()] if bases else []})
    # Created only now, after its state: a directory the mirror made always has one.
    os.makedirs(target, mode=0o700, exist_ok=True)
    if state is not None and state.get("dirty"):
        _clean_temporaries(target)
    pending = _pending_trees(state)
    guard = Guard(records, trusted, lambda path: (_entry_at(repo, tree, path) for tree in pending))
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        written = _apply(repo, target, root_fd, plan, guard, report, restore_owner, stop)
        record(records, root_fd, plan.every if plan.every is not None else written, guard.kept)
    finally:
        os.close(root_fd)
    records.set_local(guard.kept | local if report.stopped else guard.kept)
    records.commit()
    report.kept_local_changes = sorted(guard.kept)
    if report.ok:
        _save_state(target, {"repository": repo.id, "source": snap.source, "snapshot": snap.id, "records": True,
                             "tree": snap.tree.hex(), "pending": [], "dirty": False})
    return report


def _apply(repo: Repository, target: str, root_fd: int, plan: _Plan, guard: Guard, report: MirrorReport,
           restore_owner: bool | None, stop: threading.Event | None) -> list[Entry]:
    """Remove, clear and write what the plan says, except what the guard keeps.  :returns: the entries handed
    to restore (a stop ends the list early)."""
    write, clashes = guard_writes(guard, root_fd, plan.write)
    _remove_paths(root_fd, plan.removed, report, guard, stop)
    if clashes:  # what stands where an entry of another kind must go (a directory where a file goes, ...)
        before = report.removed
        blocked = _remove_paths(root_fd, clashes, report, guard, stop)
        report.removed = before  # replaced, not removed
        write = [e for e in write if e.path not in blocked]
    if plan.listing is not None:
        skip = set(plan.removed) | {a for p in [*plan.removed, *guard.kept] for a in _ancestors(p)}
        name_strays(guard, root_fd, plan.listing, skip)
    if report.stopped:
        return []
    handed: list[Entry] = []

    def entries() -> Iterator[Entry]:
        for e in write:
            if stop is not None and stop.is_set():
                report.stopped = True
                return
            handed.append(e)
            yield e

    def read_file(entry: Entry) -> Iterator[bytes]:
        for chunk_id in entry.chunks:
            if stop is not None and stop.is_set():
                raise _Stopped(STOPPED)
            yield repo.read_blob(chunk_id)

    rr = restore(target, entries(), read_file, restore_owner=restore_owner, fsync_each=True)
    if any(why == STOPPED for _p, why in rr.errors):
        report.stopped = True
    report.files, report.bytes = rr.files + rr.hardlinks, rr.bytes
    report.errors += [e for e in rr.errors if e[1] != STOPPED] + rr.refused
    report.warnings += rr.warnings
    return handed


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
    request.  A target that is not the mirror's (check_target) is refused at
    construction: ``refused`` holds the reason and the worker never does anything.
    ``discard_local`` applies to the first update that completes, then local changes are kept again.
    """

    def __init__(self, repo: Repository, target: str, *, source: str | None = None,
                 on_done: Callable[[MirrorReport | None, BaseException | None], None] | None = None,
                 restore_owner: bool | None = None, adopt: bool = False, discard_local: bool = False) -> None:
        self.repo = repo
        self.target = os.path.abspath(target)
        self.source = source
        self.on_done = on_done
        self.restore_owner = restore_owner
        self.adopt = adopt
        self.discard_local = discard_local
        self.refused = check_target(self.target, adopt)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror")
        self._lock = threading.Lock()
        self._queued = False
        self.updates = 0

    def request(self) -> None:
        if self.refused is not None or self._stop.is_set():
            return
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
        report = mirror_snapshot(self.repo, snap, self.target, restore_owner=self.restore_owner, adopt=self.adopt,
                                 discard_local=self.discard_local, stop=self._stop)
        if report.ok:
            self.adopt = self.discard_local = False  # once: from now on the directory is the mirror's
        return report

    def stop(self) -> None:
        """Ask the running update to end between two files (never blocks); no update starts after it."""
        self._stop.set()

    def close(self) -> None:
        """Stop the running update (it ends within a moment, every file whole), drop a queued one, end the thread."""
        self.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
