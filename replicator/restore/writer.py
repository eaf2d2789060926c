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
* Directory metadata (mode, owner, xattrs, mtime) is applied after the
  directory's contents, so read-only directories restore and mtimes stick.

It never prints, logs or exits: per-entry problems are collected in a
:class:`RestoreReport` and the restore goes on with the other entries.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from replicator.format.entry import KIND_DIR, KIND_FILE, KIND_SYMLINK, Entry

TMP_PREFIX = ".replicator-tmp-"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Metadata failures that mean "not allowed or not supported here": warnings, not errors.
_SOFT_ERRNOS = frozenset({errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP})


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
    for part in path.split("/"):
        if part == "":
            return "empty path component"
        if part in (".", ".."):
            return f"'{part}' component in path"
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
    """An open directory on the path to the current entry."""

    relpath: str  # "" for the target root
    fd: int
    entry: Entry | None  # the dir entry whose metadata is applied on exit; None for pass-through
    dirty: bool = False  # names were added or replaced: fsync on exit


def restore(
    target: str,
    entries: Iterable[Entry],
    read_file: Callable[[Entry], Iterable[bytes]],
    *,
    restore_owner: bool | None = None,
    on_progress: Callable[[int], None] | None = None,
    fsync_each: bool = True,
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
    :param on_progress: called with the number of bytes after each write.
    :param fsync_each: fsync every file before its rename and every changed
        directory (a live mirror needs this: a crash must never expose a
        half-written file).  A one-shot restore passes False and syncs the file
        system once at the end, which is many times faster for small files.
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
    _Restorer(root_fd, report, read_file, restore_owner, on_progress, fsync_each).run(entries)
    if not fsync_each:
        os.sync()
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
    ) -> None:
        self.fsync_each = fsync_each
        self.report = report
        self.read_file = read_file
        self.restore_owner = restore_owner
        self.on_progress = on_progress
        self.stack: list[_Frame] = [_Frame("", root_fd, None)]

    # -- driver -------------------------------------------------------------

    def run(self, entries: Iterable[Entry]) -> None:
        try:
            for entry in entries:
                self._one(entry)
        finally:
            while self.stack:
                self._pop()

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
            above = self.stack[-1].relpath
            if parent == above or parent.startswith(above + "/"):
                break
            self._pop()
        top = self.stack[-1]
        if parent == top.relpath:
            return top
        rest = parent[len(top.relpath) + 1:] if top.relpath else parent
        for part in rest.split("/"):
            rel = f"{top.relpath}/{part}" if top.relpath else part
            fd = self._open_dir(top.fd, part, rel)
            top = _Frame(rel, fd, None)
            self.stack.append(top)
        return top

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
        frame = self.stack.pop()
        try:
            if frame.entry is not None:
                self._dir_metadata(frame)
            if frame.dirty and self.fsync_each:
                try:
                    os.fsync(frame.fd)  # make the renames into this directory durable
                except OSError as exc:
                    self.report.errors.append((frame.relpath or ".", f"fsync of directory failed: {_strerror(exc)}"))
        finally:
            os.close(frame.fd)

    # -- entries ------------------------------------------------------------

    def _dir(self, parent: _Frame, name: str, entry: Entry) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent.fd)
            parent.dirty = True
        except FileExistsError:
            pass  # an existing directory is reused; _open_dir refuses anything else
        fd = self._open_dir(parent.fd, name, entry.path)
        frame = _Frame(entry.path, fd, entry)
        self.stack.append(frame)
        self.report.dirs += 1
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
            raise _Failed("destination exists as a directory")

    def _tmp_name(self) -> str:
        return TMP_PREFIX + secrets.token_hex(8)

    def _file(self, parent: _Frame, name: str, entry: Entry) -> None:
        self._check_replaceable(parent, name)
        pfd = parent.fd
        for _ in range(16):
            tmp = self._tmp_name()
            try:
                fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=pfd)
                break
            except FileExistsError:
                continue
        else:
            raise _Failed("cannot create a temporary file name")
        parent.dirty = True
        placed = False
        try:
            try:
                written = self._write_all(fd, entry)
                if self.fsync_each:
                    os.fsync(fd)
                if written != entry.size:
                    raise _Failed(f"size mismatch: expected {entry.size} bytes, got {written}")
                self._owner_fd(fd, entry)
                os.fchmod(fd, entry.mode & 0o7777)
                self._xattrs_fd(fd, entry)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            placed = True
        finally:
            if not placed:
                _unlink_quiet(tmp, pfd)
        self.report.files += 1
        self.report.bytes += written

    def _write_all(self, fd: int, entry: Entry) -> int:
        """Write the chunks of ``entry`` to ``fd``; returns the byte count."""
        written = 0
        try:
            chunks = iter(self.read_file(entry))
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
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
                    if self.on_progress is not None:
                        self.on_progress(n)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # let a generator release what it holds (pack readers, files)
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

    # -- metadata -----------------------------------------------------------

    def _owner_fd(self, fd: int, entry: Entry) -> None:
        # chown comes before chmod: chown clears the setuid/setgid bits.
        if not self.restore_owner:
            return
        try:
            os.fchown(fd, entry.uid, entry.gid)
        except OSError as exc:
            self._soft(entry, f"cannot set owner {entry.uid}:{entry.gid}", exc)

    def _xattrs_fd(self, fd: int, entry: Entry) -> None:
        for xname, value in entry.xattrs:
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


def _unlink_quiet(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
