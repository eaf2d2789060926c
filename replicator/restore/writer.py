"""Safe restore writer: put snapshot entries back on disk under a target directory.

This module owns path validation and the write discipline of a restore.  Its
guarantees (what must not change):

* Nothing is ever written outside ``target``.  Every path is validated
  (:func:`validate_relpath`), and every operation happens relative to
  directory file descriptors opened component by component with
  ``O_DIRECTORY | O_NOFOLLOW``, so a symlink already present in the target
  (``target/a -> /etc``) is refused, never written through.
* A file appears under its final name only complete: contents go to a temp
  name in the same directory (``O_CREAT | O_EXCL | O_NOFOLLOW``), are fsynced,
  checked against ``entry.size``, given their metadata, then renamed into
  place.  A failed file leaves no temp file and does not clobber what was there.
* Sparse files stay sparse: runs of zeros of a page or more are skipped,
  not written (the temp file is new, so they read as zeros and whole pages
  stay holes).
* Directory metadata (mode, owner, xattrs, mtime) is applied after the
  directory's contents, so read-only directories restore and mtimes stick.
* Any depth: no recursion, no path longer than one name handed to the
  kernel, and at most ``MAX_OPEN_DIRS`` directory descriptors open.  The
  shallower ones are closed on the way down and reopened on the way up
  through ``..`` only if that is the same directory (device and inode) as
  when it was opened, else by name from the target root, checked the same
  way; a directory not found again is an error (its metadata is not
  applied) and the entries below it are opened afresh with ``O_NOFOLLOW``.
* Privileges come back only when asked for (``restore_privileges``): without
  it a regular file is restored without its setuid/setgid bits and without
  the ``security.capability`` xattr, and a warning names the file, so a
  snapshot (or whoever could write into the repository) cannot plant a
  privileged program by a restore.  Directories keep setgid (it only makes
  new files inherit the group).
* Deleting what the snapshot lacks (``delete_extras``, ``restore --delta
  --delete``) happens only after every entry is written (the files going
  away may be seeds of later ones), only in directories the snapshot has and
  the target root, by name relative to their descriptors: a symlink is
  removed, never followed, and a directory on another file system (a mount
  point) is never entered.  A tree is removed with at most
  ``MAX_OPEN_DIRS`` descriptors open: deeper directories are first moved up
  to the top of the tree being removed (still inside it).

It never prints, logs or exits: per-entry problems are collected in a
:class:`RestoreReport` and the restore goes on with the other entries.
"""
from __future__ import annotations

import errno
import itertools
import os
import secrets
import stat
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry

TMP_PREFIX = ".replicator-tmp-"
#: Directory descriptors a restore keeps open at most, whatever the depth of the tree.
MAX_OPEN_DIRS = 64
# writers > 1: small files (up to SMALL_FILE) are created, written, given their metadata and renamed
# into place by that many threads (file creation is what a restore of many small files waits on);
# their data is read on the restorer's thread, in order, at most IN_FLIGHT_PER_WRITER files ahead each.
SMALL_FILE = 1 << 20
IN_FLIGHT_PER_WRITER = 8

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Metadata failures that mean "not allowed or not supported here": warnings, not errors.
_SOFT_ERRNOS = frozenset({errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP})
#: What makes a file run with other rights than its caller's: restored only with restore_privileges.
_PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID
_PRIVILEGED_XATTRS = frozenset({"security.capability"})
#: Zero runs at least this long are skipped, not written (a page: the smallest hole a file system keeps).
_HOLE_MIN = 4096
_ZERO_PAGE = bytes(_HOLE_MIN)
_ZEROS = memoryview(bytes(1 << 20))  # compared against, never written


@dataclass
class RestoreReport:
    """What a restore did.  ``ok`` is False when any entry failed or was refused.

    ``errors``: entries that could not be restored (I/O, read_file failures,
    size mismatch).  ``refused``: entries rejected as unsafe (bad path, symlink
    or non-directory in the way).  ``warnings``: metadata that could not be
    applied (owner or xattrs without permission); the data is restored.
    Each list holds ``(entry path, one-line reason)``.
    """

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    kept: int = 0  # files left as they were (keep_unchanged: same size and modification time)
    fetched_bytes: int = 0  # file bytes read from the repository (all of ``bytes`` unless seeds lent some)
    seeded_bytes: int = 0  # file bytes taken from files already in the target (restore/seeds.py)
    deleted: int = 0  # files, symlinks and directories removed as not in the snapshot (delete_extras)
    errors: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.refused


def validate_relpath(path: str) -> str | None:
    """Check that ``path`` is a safe snapshot-relative path.

    Safe means: a non-empty str, relative, '/'-separated, with no empty, '.'
    or '..' component, no NUL byte, and encodable with ``os.fsencode``.
    Backslashes and any other bytes are legal POSIX name characters.

    :param path: the path as stored in an Entry (or a hard link's ``link_to``).
    :returns: ``None`` when the path is safe, otherwise a one-line reason.
    """
    if not isinstance(path, str):
        return f"path is not a string ({type(path).__name__})"
    if not path:
        return "empty path"
    if "\x00" in path:
        return "NUL byte in path"
    if path.startswith("/"):
        return "absolute path"
    # The first bad component, found by substring search (C speed): a Python loop
    # over the components would make a tree N levels deep cost N^2 steps.
    wrapped = f"/{path}/"
    found = [(i, why) for i, why in ((wrapped.find("//"), "empty path component"),
                                     (wrapped.find("/./"), "'.' component in path"),
                                     (wrapped.find("/../"), "'..' component in path")) if i >= 0]
    if found:
        return min(found)[1]
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return "path cannot be encoded for the file system"
    return None


class _Refused(Exception):
    """Internal: the entry is unsafe; goes to report.refused."""


class _Failed(Exception):
    """Internal: the entry could not be restored; goes to report.errors."""


def _strerror(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclass
class _Frame:
    """A directory on the path to the current entry (open unless closed to bound the descriptors)."""

    relpath: str  # "" for the target root
    fd: int  # -1 while closed (only frames below the deepest MAX_OPEN_DIRS, never the root or the top)
    entry: Entry | None  # the dir entry whose metadata is applied on exit; None for pass-through
    dirty: bool = False  # names were added or replaced: fsync on exit
    ident: tuple[int, int] = (0, 0)  # (st_dev, st_ino) when opened: a reopened descriptor must match it
    writing: int = 0  # its files still being written by the writer threads (applied before its metadata)
    left: bool = False  # popped while ``writing``: finished (metadata, fsync, close) by the last of its files
    fresh: bool = False  # made empty by this restore's mkdir: its names need no look before they are written


def restore(
    target: str,
    entries: Iterable[Entry],
    read_file: Callable[[Entry], Iterable[bytes]],
    *,
    restore_owner: bool | None = None,
    restore_privileges: bool = False,
    on_progress: Callable[[int], None] | None = None,
    fsync_each: bool = True,
    keep_unchanged: bool = False,
    delete_extras: bool = False,
    writers: int = 1,
) -> RestoreReport:
    """Restore ``entries`` under ``target``.

    :param target: destination directory; created (with parents) if missing.
        It is the one path followed as given (the operator named it).
    :param entries: entries in pre-order (parents first).  Every one is
        validated anyway; a directory entry is expected before its contents.
    :param read_file: yields the plaintext chunks of a file entry.  Not called
        for hard links.  Any exception it raises fails that entry only.
    :param restore_owner: chown to the recorded uid/gid; ``None`` means "if
        running as root".  EPERM is a warning.
    :param restore_privileges: give regular files their setuid/setgid bits and
        ``security.capability`` xattr; otherwise they are left out, with a
        warning per file.  A live mirror never asks for them.
    :param on_progress: called with the number of bytes after each write.
    :param fsync_each: fsync every file before its rename and every changed
        directory (a live mirror needs this: a crash must never expose a
        half-written file).  A one-shot restore passes False and syncs the file
        system once at the end, which is many times faster for small files.
    :param keep_unchanged: leave a regular file already at the entry's path, with the entry's size and
        modification time and mode, as it is (``quick_same``: ``restore --delta``; counted in ``kept``).
    :param delete_extras: make the target hold only what ``entries`` has (``rsync --delete``): a directory
        in the way of a file, or anything in the way of a directory, is removed first; once every entry is
        written, every name in the target root and in each restored directory that ``entries`` does not
        have is removed (counted in ``deleted``).  ``entries`` must then be the whole snapshot, never a
        ``--path`` part of it (the directories above the part would be emptied).
    :param writers: threads that place small files (1: every file on the calling thread).  A directory's
        metadata is applied once its files are in place (the restorer reads on meanwhile), and a hard link
        made only once the files before it are in place.
    :returns: a :class:`RestoreReport`; nothing is raised for a single entry.
        If ``target`` itself cannot be created or opened, the report holds that
        one error (with ``target`` as its path) and nothing else is done.
    """
    report = RestoreReport()
    try:
        os.makedirs(target, mode=0o700, exist_ok=True)
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        report.errors.append((target, f"cannot open target directory: {_strerror(exc)}"))
        return report
    if restore_owner is None:
        restore_owner = os.geteuid() == 0
    _Restorer(root_fd, report, read_file, restore_owner, on_progress, fsync_each,
              restore_privileges=restore_privileges, keep_unchanged=keep_unchanged,
              delete_extras=delete_extras, writers=writers).run(entries)
    if not fsync_each:
        os.sync()
    report.fetched_bytes = report.bytes  # every byte came from read_file; Seeds.account says where from
    return report


class _Restorer:
    def __init__(
        self,
        root_fd: int,
        report: RestoreReport,
        read_file: Callable[[Entry], Iterable[bytes]],
        restore_owner: bool,
        on_progress: Callable[[int], None] | None,
        fsync_each: bool = True,
        *,
        restore_privileges: bool = False,
        keep_unchanged: bool = False,
        delete_extras: bool = False,
        writers: int = 1,
    ) -> None:
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="restore-writer") if writers > 1 else None
        self._in_flight: deque[tuple[Entry, _Frame, Future]] = deque()  # oldest first
        self._max_in_flight = writers * IN_FLIGHT_PER_WRITER
        self.keep_unchanged = keep_unchanged
        self.delete_extras = delete_extras
        self._names: dict[str, set[str]] = {}  # delete_extras: directory -> the names the entries give it
        self._restored_dirs: list[Entry] = []  # delete_extras: directories restored, in pre-order
        self.fsync_each = fsync_each
        self.restore_privileges = restore_privileges
        self.report = report
        self.read_file = read_file
        self.restore_owner = restore_owner
        self.on_progress = on_progress
        root_st = os.fstat(root_fd)
        self.root_dev = root_st.st_dev
        self.stack: list[_Frame] = [_Frame("", root_fd, None, ident=(root_st.st_dev, root_st.st_ino))]
        self._open_from = 1  # stack[1:_open_from] are closed; the root never is
        # Temporary names: a random part per restore and a counter (not a getrandom call per file); a
        # name taken anyway (O_EXCL) is skipped.  next() on a count is atomic, so writer threads share it.
        self._tmp_base = f"{TMP_PREFIX}{secrets.token_hex(6)}-"
        self._tmp_seq = itertools.count()

    # -- driver -------------------------------------------------------------

    def run(self, entries: Iterable[Entry]) -> None:
        try:
            for entry in entries:
                self._one(entry)
            self._settle()
            if self.delete_extras:
                self._delete_extras()
        finally:
            self._settle()
            while self.stack:
                self._pop()
            if self._pool is not None:
                self._pool.shutdown()

    # -- files placed by the writer threads ---------------------------------

    def _settle(self, frame: _Frame | None = None) -> None:
        """Collect the files being written: all of them, or until ``frame`` has none left."""
        while self._in_flight and (frame is None or frame.writing):
            self._collect()

    def _collect(self) -> None:
        entry, frame, fut = self._in_flight.popleft()
        frame.writing -= 1
        try:
            self._placed(entry, fut)
        finally:
            if frame.left and not frame.writing:
                self._finish(frame)

    def _placed(self, entry: Entry, fut: Future) -> None:
        try:
            written = fut.result()
        except _Refused as exc:
            self.report.refused.append((entry.path, str(exc)))
        except _Failed as exc:
            self.report.errors.append((entry.path, str(exc)))
        except (OSError, ValueError, OverflowError) as exc:
            self.report.errors.append((entry.path, _strerror(exc)))
        else:
            self.report.files += 1
            self.report.bytes += written
            if self.on_progress is not None and written:
                self.on_progress(written)

    def _hand_off(self, parent: _Frame, name: str, entry: Entry) -> None:
        """Read a small file's data here, in order; a writer thread places it (over its own descriptor of
        the directory, so closing frames never pulls one from under it)."""
        chunks: list[bytes] = []
        size = 0
        stream = None
        try:
            stream = iter(self.read_file(entry))
            for chunk in stream:
                size += memoryview(chunk).nbytes
                if size > entry.size:  # stop early: a bad stream must not fill the memory
                    raise _Failed(f"size mismatch: expected {entry.size} bytes, got at least {size}")
                chunks.append(chunk)
        except _Failed:
            raise
        except Exception as exc:  # the caller's code: any failure fails this entry only
            raise _Failed(str(exc) or type(exc).__name__) from exc
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        while len(self._in_flight) >= self._max_in_flight:
            self._collect()
        pfd = os.dup(parent.fd)
        parent.dirty = True
        assert self._pool is not None
        fut = self._pool.submit(self._place_file, pfd, name, entry, chunks, None, True)
        parent.writing += 1
        self._in_flight.append((entry, parent, fut))

    def _one(self, entry: Entry) -> None:
        path = entry.path
        try:
            reason = validate_relpath(path)
            if reason is not None:
                raise _Refused(reason)
            if entry.link_to:
                reason = validate_relpath(entry.link_to)
                if reason is not None:
                    raise _Refused(f"invalid hard link target {entry.link_to!r}: {reason}")
            if self.delete_extras:
                self._names.setdefault(entry.parent, set()).add(entry.name)  # kept even if it fails
            parent = self._enter(entry.parent)
            name = entry.name
            if entry.kind == KIND_DIR:
                self._dir(parent, name, entry)
            elif entry.kind == KIND_FILE and entry.link_to:
                self._hardlink(parent, name, entry)
            elif entry.kind == KIND_FILE:
                self._file(parent, name, entry)
            elif entry.kind == KIND_SYMLINK:
                self._symlink(parent, name, entry)
            else:
                raise _Refused(f"unknown entry kind {entry.kind!r}")
        except _Refused as exc:
            self.report.refused.append((path, str(exc)))
        except _Failed as exc:
            self.report.errors.append((path, str(exc)))
        except (OSError, ValueError, OverflowError) as exc:
            self.report.errors.append((path, _strerror(exc)))

    # -- directory stack ----------------------------------------------------

    def _enter(self, parent: str) -> _Frame:
        """Make the top of the stack the frame for directory ``parent``.

        Frames that are not ancestors of ``parent`` are closed (applying their
        directory metadata); missing components are opened with O_NOFOLLOW.
        """
        while len(self.stack) > 1:
            above = self.stack[-1]
            if above.fd >= 0 and (parent == above.relpath or parent.startswith(above.relpath + "/")):
                break
            self._pop()  # not an ancestor, or lost (moved away during the restore): opened afresh below
        top = self.stack[-1]
        if parent == top.relpath:
            return top
        rest = parent[len(top.relpath) + 1:] if top.relpath else parent
        for part in rest.split("/"):
            rel = f"{top.relpath}/{part}" if top.relpath else part
            fd = self._open_dir(top.fd, part, rel)
            top = self._push(_Frame(rel, fd, None))
        return top

    def _push(self, frame: _Frame) -> _Frame:
        """Put an open frame on the stack; close the shallowest open one beyond MAX_OPEN_DIRS."""
        try:
            st = os.fstat(frame.fd)
        except BaseException:
            os.close(frame.fd)
            raise
        frame.ident = (st.st_dev, st.st_ino)
        self.stack.append(frame)
        if len(self.stack) - self._open_from > MAX_OPEN_DIRS:
            low = self.stack[self._open_from]
            if low.fd >= 0:
                os.close(low.fd)
                low.fd = -1
            self._open_from += 1
        return frame

    def _reopen_parent(self, child: _Frame) -> None:
        """Give the new top (the parent of ``child``, which is being left) its descriptor back.

        Through ``..`` of the child if that is still the directory it was; else
        by name from the root, each component checked the same way.  When it
        cannot be found again it stays closed (lost): an error, and _enter
        leaves it.
        """
        parent = self.stack[-1]
        self._open_from = len(self.stack) - 1
        if child.fd >= 0:
            try:
                fd = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
            except OSError:
                fd = -1
            if fd >= 0 and _identity(fd) == parent.ident:
                parent.fd = fd
                return
            if fd >= 0:
                os.close(fd)
        fd = os.dup(self.stack[0].fd)
        try:
            for frame in self.stack[1:]:
                nfd = os.open(frame.relpath.rsplit("/", 1)[-1], _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
                if _identity(fd) != frame.ident:
                    raise FileNotFoundError(errno.ENOENT, "replaced")
        except OSError:
            os.close(fd)
            self.report.errors.append((parent.relpath, "directory moved or replaced during the restore; "
                                                       "its metadata was not applied"))
            parent.entry = None
            return
        parent.fd = fd

    def _open_dir(self, dir_fd: int, name: str, rel: str) -> int:
        """Open directory ``name`` in ``dir_fd`` without following a symlink."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise _Failed(f"parent directory '{rel}' does not exist (not restored)") from None
                if stat.S_ISLNK(st.st_mode):
                    raise _Refused(f"'{rel}' is a symlink in the target; refusing to write through it") from None
                if not stat.S_ISDIR(st.st_mode):
                    raise _Refused(f"'{rel}' exists in the target and is not a directory") from None
            raise _Failed(f"cannot open directory '{rel}': {_strerror(exc)}") from None

    def _pop(self) -> None:
        """Leave the top directory.  Its metadata goes on once its files are in place (their renames touch
        its mtime): now if none is being written, else when the last one is collected (``_collect``), so
        the restorer goes on reading the next directory's files meanwhile.  Such a frame keeps its
        descriptor until then: at most ``_max_in_flight`` of them."""
        frame = self.stack.pop()
        try:
            if self.stack and self.stack[-1].fd < 0 and len(self.stack) > 1:
                self._reopen_parent(frame)
        finally:
            if frame.writing:
                frame.left = True
            else:
                self._finish(frame)

    def _finish(self, frame: _Frame) -> None:
        """Apply a left directory's metadata, fsync it when names changed in it, close it."""
        try:
            if frame.fd >= 0:  # else lost (reported when it was): nothing to apply
                if frame.entry is not None:
                    self._dir_metadata(frame)
                if frame.dirty and self.fsync_each:
                    try:
                        os.fsync(frame.fd)  # make the renames into this directory durable
                    except OSError as exc:
                        self.report.errors.append((frame.relpath or ".",
                                                   f"fsync of directory failed: {_strerror(exc)}"))
        finally:
            if frame.fd >= 0:
                os.close(frame.fd)
                frame.fd = -1

    # -- entries ------------------------------------------------------------

    def _dir(self, parent: _Frame, name: str, entry: Entry) -> None:
        fresh = False
        try:
            os.mkdir(name, 0o700, dir_fd=parent.fd)
            parent.dirty = fresh = True
        except FileExistsError:
            # An existing directory is reused; _open_dir refuses anything else, unless it is to go.
            if self.delete_extras and not stat.S_ISDIR(os.stat(name, dir_fd=parent.fd, follow_symlinks=False).st_mode):
                self._remove(parent.fd, name, entry.path)
                os.mkdir(name, 0o700, dir_fd=parent.fd)
                parent.dirty = True
        fd = self._open_dir(parent.fd, name, entry.path)
        self._push(_Frame(entry.path, fd, entry, fresh=fresh and not self.delete_extras))
        self.report.dirs += 1
        if self.delete_extras:
            self._restored_dirs.append(entry)
        if fresh:
            return  # made 0o700 by us
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
            # An existing read-only directory: make it writable for its
            # contents; the recorded mode is applied when the subtree ends.
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)

    def _dir_metadata(self, frame: _Frame) -> None:
        entry = frame.entry
        assert entry is not None
        try:
            self._owner_fd(frame.fd, entry)
            os.fchmod(frame.fd, entry.mode & 0o7777)
            self._xattrs_fd(frame.fd, entry)
            os.utime(frame.fd, ns=(entry.mtime_ns, entry.mtime_ns))
        except _Failed as exc:
            self.report.errors.append((entry.path, str(exc)))
        except (OSError, ValueError, OverflowError) as exc:
            self.report.errors.append((entry.path, f"cannot set directory metadata: {_strerror(exc)}"))

    def _check_replaceable(self, parent: _Frame, name: str) -> None:
        """The name may be absent, a file or a symlink (replaced by rename), never a directory."""
        try:
            st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not self.delete_extras:
                raise _Failed("destination exists as a directory")
            self._remove(parent.fd, name, f"{parent.relpath}/{name}" if parent.relpath else name)
            parent.dirty = True

    @staticmethod
    def _unchanged(pfd: int, name: str, entry: Entry) -> bool:
        try:
            return quick_same(os.stat(name, dir_fd=pfd, follow_symlinks=False), entry)
        except OSError:
            return False

    def _tmp_name(self) -> str:
        return f"{self._tmp_base}{next(self._tmp_seq):x}"

    def _file(self, parent: _Frame, name: str, entry: Entry) -> None:
        # In a directory this restore made (empty), the name is free unless the snapshot names it twice: then
        # the rename replaces the file of that name, or fails on a directory of that name (EISDIR, an error).
        if not parent.fresh:
            self._check_replaceable(parent, name)
        pfd = parent.fd
        if self.keep_unchanged and not parent.fresh and self._unchanged(pfd, name, entry):
            self.report.kept += 1
            return
        if self._pool is not None and entry.size <= SMALL_FILE:
            self._hand_off(parent, name, entry)
            return
        parent.dirty = True
        written = self._place_file(pfd, name, entry, None, self.on_progress, False)
        self.report.files += 1
        self.report.bytes += written

    def _place_file(self, pfd: int, name: str, entry: Entry, chunks: list[bytes] | None,
                    on_progress: Callable[[int], None] | None, own_fd: bool) -> int:
        """Write ``entry`` to a temporary name in ``pfd``, give it its metadata and rename it into place.

        ``chunks``: its data, else read here through ``read_file``; ``own_fd``: close ``pfd`` at the end
        (a writer thread's descriptor).  :returns: the bytes written.  Touches no report counter (a writer
        thread runs it); warnings are appended, which is safe from any thread.
        """
        try:
            return self._place_file_in(pfd, name, entry, chunks, on_progress)
        finally:
            if own_fd:
                os.close(pfd)

    def _place_file_in(self, pfd: int, name: str, entry: Entry, chunks: list[bytes] | None,
                       on_progress: Callable[[int], None] | None) -> int:
        for _ in range(16):
            tmp = self._tmp_name()
            try:
                fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=pfd)
                break
            except FileExistsError:
                continue
        else:
            raise _Failed("cannot create a temporary file name")
        placed = False
        try:
            try:
                written = self._write_all(fd, entry, chunks, on_progress)
                if self.fsync_each:
                    os.fsync(fd)
                if written != entry.size:
                    raise _Failed(f"size mismatch: expected {entry.size} bytes, got {written}")
                mode, xattrs = self._file_privileges(entry)
                self._owner_fd(fd, entry)
                os.fchmod(fd, mode)
                self._xattrs_fd(fd, entry, xattrs)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            placed = True
        finally:
            if not placed:
                _unlink_quiet(tmp, pfd)
        return written

    def _write_all(self, fd: int, entry: Entry, given: list[bytes] | None = None,
                   on_progress: Callable[[int], None] | None = None) -> int:
        """Write the chunks of ``entry`` to the new file ``fd``, runs of zeros as holes; returns the byte count.

        A run of at least a page of zero bytes is not written, only skipped
        (positional writes), and the file is extended to its size at the end:
        the fresh file reads zeros there, and the file system keeps whole
        skipped pages as holes, so a sparse file restores sparse.
        """
        written = extent = 0  # bytes given; the end of the last byte written (beyond it: a trailing hole)
        try:
            chunks = iter(given if given is not None else self.read_file(entry))
        except Exception as exc:  # the caller's code: any failure fails this entry only
            raise _Failed(str(exc) or type(exc).__name__) from exc
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception as exc:
                    raise _Failed(str(exc) or type(exc).__name__) from exc
                view = memoryview(chunk).cast("B")
                if written + len(view) > entry.size:
                    # Stop early: a bad stream must not fill the disk.
                    raise _Failed(
                        f"size mismatch: expected {entry.size} bytes, got at least {written + len(view)}"
                    )
                data = chunk if type(chunk) is bytes else view.tobytes()  # find/startswith need bytes
                for start, end in _data_runs(data):
                    _pwrite_all(fd, view[start:end], written + start)
                    extent = written + end
                written += len(view)
                if on_progress is not None and view:
                    on_progress(len(view))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # let a generator release what it holds (pack readers, files)
        if extent < written:
            os.ftruncate(fd, written)  # a trailing hole: the size comes from here, not from a write
        return written

    def _symlink(self, parent: _Frame, name: str, entry: Entry) -> None:
        self._check_replaceable(parent, name)
        pfd = parent.fd
        tmp = self._tmp_name()
        os.symlink(entry.target, tmp, dir_fd=pfd)
        parent.dirty = True
        placed = False
        try:
            if self.restore_owner:
                try:
                    os.chown(tmp, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
                except OSError as exc:
                    self._soft(entry, f"cannot set owner {entry.uid}:{entry.gid}", exc)
            os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=pfd, follow_symlinks=False)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            placed = True
        finally:
            if not placed:
                _unlink_quiet(tmp, pfd)
        if entry.xattrs:
            self.report.warnings.append((entry.path, "xattrs of symlinks are not restored"))
        self.report.symlinks += 1

    def _hardlink(self, parent: _Frame, name: str, entry: Entry) -> None:
        self._settle()  # its target may be a file still being written
        self._check_replaceable(parent, name)
        src_parent, _, src_name = entry.link_to.rpartition("/")
        src_fd = self._open_path(src_parent) if src_parent else os.dup(self.stack[0].fd)
        try:
            try:
                src_st = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise _Failed(f"hard link target '{entry.link_to}' does not exist (not restored)") from None
            if not stat.S_ISREG(src_st.st_mode):
                raise _Refused(f"hard link target '{entry.link_to}' is not a regular file")
            try:
                dst_st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
                if (dst_st.st_dev, dst_st.st_ino) == (src_st.st_dev, src_st.st_ino):
                    self.report.hardlinks += 1  # already linked (restore into an existing tree)
                    return
            except FileNotFoundError:
                pass
            tmp = self._tmp_name()
            os.link(src_name, tmp, src_dir_fd=src_fd, dst_dir_fd=parent.fd, follow_symlinks=False)
            parent.dirty = True
            try:
                os.rename(tmp, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            finally:
                _unlink_quiet(tmp, parent.fd)  # gone after a rename; left behind if it failed
        finally:
            os.close(src_fd)
        self.report.hardlinks += 1

    def _open_path(self, rel: str) -> int:
        """A fresh fd for directory ``rel`` (already validated), component by component."""
        fd = os.dup(self.stack[0].fd)
        done = ""
        try:
            for part in rel.split("/"):
                done = f"{done}/{part}" if done else part
                nfd = self._open_dir(fd, part, done)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- deleting what the snapshot lacks (delete_extras) -------------------

    def _delete_extras(self) -> None:
        """After every entry: remove the names in the root and each restored directory the entries lack."""
        for entry in [None, *self._restored_dirs]:
            rel = entry.path if entry is not None else ""
            where = rel or "."
            try:
                frame = self._enter(rel)
                keep = self._names.get(rel, set())
                extras = [n for n in os.listdir(frame.fd) if n not in keep]
            except (_Refused, _Failed) as exc:
                self.report.errors.append((where, f"not cleaned: {exc}"))
                continue
            except OSError as exc:
                self.report.errors.append((where, f"not cleaned: {_strerror(exc)}"))
                continue
            if not extras:
                continue
            try:
                st = os.fstat(frame.fd)
                if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                    os.fchmod(frame.fd, stat.S_IMODE(st.st_mode) | 0o700)  # a read-only directory: for now
                for name in extras:
                    path = f"{rel}/{name}" if rel else name
                    try:
                        self._remove(frame.fd, name, path)
                    except _Failed as exc:
                        self.report.errors.append((path, str(exc)))
                    except OSError as exc:
                        self.report.errors.append((path, f"cannot delete: {_strerror(exc)}"))
                frame.dirty = True
                if entry is not None:  # the removals changed its time (and maybe its mode): as recorded again
                    os.fchmod(frame.fd, entry.mode & 0o7777)
                    os.utime(frame.fd, ns=(entry.mtime_ns, entry.mtime_ns))
            except OSError as exc:
                self.report.errors.append((where, f"cannot set directory metadata: {_strerror(exc)}"))

    def _remove(self, dir_fd: int, name: str, rel: str) -> None:
        """Remove ``name`` from ``dir_fd``: unlink a file or symlink (never followed), or remove a directory
        tree.  :raises _Failed: a mount point.  :raises OSError:"""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._remove_tree(dir_fd, name, rel, st)
        else:
            os.unlink(name, dir_fd=dir_fd)
            self.report.deleted += 1

    def _remove_tree(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        """Remove directory ``name`` of ``dir_fd`` and all below it, at most MAX_OPEN_DIRS levels open.

        Each level: open with O_NOFOLLOW, make writable, unlink its non-directories, then its
        subdirectories one by one; one deeper than the limit is renamed into the top of this tree first
        (inside it, so nothing moves out of the target).  :raises _Failed: a mount point below.
        """
        levels: list[tuple[int, str, list[str]]] = []  # (descriptor, name in the level above, subdirs left)

        def enter(parent_fd: int, dname: str, dst: os.stat_result) -> None:
            if dst.st_dev != self.root_dev:
                raise _Failed(f"'{rel}' holds a mount point (another file system): not deleted")
            fd = os.open(dname, _DIR_FLAGS, dir_fd=parent_fd)
            levels.append((fd, dname, []))
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o700 != 0o700:
                os.fchmod(fd, mode | 0o700)
            for child in os.listdir(fd):
                cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(cst.st_mode):
                    levels[-1][2].append(child)
                else:
                    os.unlink(child, dir_fd=fd)
                    self.report.deleted += 1

        try:
            enter(dir_fd, name, st)
            while levels:
                fd, dname, pending = levels[-1]
                if pending:
                    child = pending.pop()
                    if len(levels) >= MAX_OPEN_DIRS:
                        moved = self._tmp_name()
                        os.rename(child, moved, src_dir_fd=fd, dst_dir_fd=levels[0][0])
                        levels[0][2].append(moved)
                        continue
                    enter(fd, child, os.stat(child, dir_fd=fd, follow_symlinks=False))
                    continue
                levels.pop()
                os.close(fd)
                os.rmdir(dname, dir_fd=levels[-1][0] if levels else dir_fd)
                self.report.deleted += 1
        finally:
            for fd, _n, _p in levels:
                os.close(fd)

    # -- metadata -----------------------------------------------------------

    def _owner_fd(self, fd: int, entry: Entry) -> None:
        # chown comes before chmod: chown clears the setuid/setgid bits.
        if not self.restore_owner:
            return
        try:
            os.fchown(fd, entry.uid, entry.gid)
        except OSError as exc:
            self._soft(entry, f"cannot set owner {entry.uid}:{entry.gid}", exc)

    def _file_privileges(self, entry: Entry) -> tuple[int, tuple[tuple[str, bytes], ...]]:
        """The mode and xattrs to give a regular file: without privileges unless asked for (warned)."""
        mode = entry.mode & 0o7777
        if self.restore_privileges:
            return mode, entry.xattrs
        dropped = [what for bit, what in ((stat.S_ISUID, "setuid bit"), (stat.S_ISGID, "setgid bit")) if mode & bit]
        dropped += [f"{name} xattr" for name, _value in entry.xattrs if name in _PRIVILEGED_XATTRS]
        if not dropped:
            return mode, entry.xattrs
        self.report.warnings.append((entry.path, f"privileges not restored: {', '.join(dropped)}"))
        return mode & ~_PRIVILEGE_BITS, tuple(kv for kv in entry.xattrs if kv[0] not in _PRIVILEGED_XATTRS)

    def _xattrs_fd(self, fd: int, entry: Entry, xattrs: tuple[tuple[str, bytes], ...] | None = None) -> None:
        for xname, value in entry.xattrs if xattrs is None else xattrs:
            try:
                os.setxattr(fd, xname, value)
            except OSError as exc:
                self._soft(entry, f"cannot set xattr {xname!r}", exc)

    def _soft(self, entry: Entry, what: str, exc: OSError) -> None:
        """Permission / support problems on metadata are warnings; the rest fail the entry."""
        if exc.errno in _SOFT_ERRNOS:
            self.report.warnings.append((entry.path, f"{what}: {_strerror(exc)}"))
        else:
            raise _Failed(f"{what}: {_strerror(exc)}") from exc


def quick_same(st: os.stat_result, e: Entry) -> bool:
    """rsync's quick check: what is on disk (``lstat``) is entry ``e`` by kind, size and modification time,
    and for a file its mode too; never True for a directory.  Used by ``restore --delta`` and the mirror."""
    if e.kind == KIND_FILE:
        return (stat.S_ISREG(st.st_mode) and st.st_size == e.size and st.st_mtime_ns == e.mtime_ns
                and stat.S_IMODE(st.st_mode) == e.mode & 0o7777)
    if e.kind == KIND_SYMLINK:
        return stat.S_ISLNK(st.st_mode) and st.st_size == len(os.fsencode(e.target)) and st.st_mtime_ns == e.mtime_ns
    return False


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _zero_run_end(data: bytes, i: int) -> int:
    """The offset of the first non-zero byte of ``data`` at or after ``i`` (or its length).

    Compared a megabyte, then a page, at a time (memcmp): zeros cost no Python loop per byte.
    """
    n = len(data)
    while i < n:
        k = min(n - i, len(_ZEROS))
        if not data.startswith(_ZEROS[:k], i):
            break  # a non-zero byte in the next k
        i += k
    else:
        return n
    while data.startswith(_ZERO_PAGE, i):
        i += _HOLE_MIN
    tail = data[i:i + _HOLE_MIN]
    return i + len(tail) - len(tail.lstrip(b"\0"))


def _data_runs(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of the parts of ``data`` to write: all but its runs of zeros.

    Inside the chunk, zero runs shorter than a page are written (not worth a
    second write); at its edges zeros are never written, so a hole that
    spans chunk boundaries has no written page in it.
    """
    runs = []
    n = len(data)
    start = i = 0
    while i < n:
        z = data.find(_ZERO_PAGE, i)  # along data without a zero page this skips a page per step
        if z < 0:
            break
        end = _zero_run_end(data, z + _HOLE_MIN)
        if z > start:
            runs.append((start, z))
        start = i = end
    if start < n:
        runs.append((start, n))
    if runs and runs[0][0] == 0 and data[0] == 0:  # fewer than a page of zeros at the head
        head = data[:_HOLE_MIN]
        runs[0] = (len(head) - len(head.lstrip(b"\0")), runs[0][1])
    if runs and runs[-1][1] == n and data[-1] == 0:  # and at the tail
        tail = data[-_HOLE_MIN:]
        runs[-1] = (runs[-1][0], n - (len(tail) - len(tail.rstrip(b"\0"))))
    return [(a, b) for a, b in runs if a < b]


def _unlink_quiet(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
