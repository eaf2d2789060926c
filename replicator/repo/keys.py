"""Key slots: several passphrases, each sealing the one master key in its own object ``keys/<name>``.

Owns the slots of one repository's storage (docs/FORMAT.md "Key files"):
listing them (a damaged slot is named and skipped, never in the way of a
good one), unlocking with a passphrase (the named slot only, else every
readable slot, cheapest first, at most ``KEY_SLOTS_MAX`` scrypt runs), and
adding, re-sealing (``key passwd``) and removing a slot.

``keys/default`` is the first slot: ``init`` writes it, ``serve`` hands it
to the other site's writers and key-less checks read its public key, so it
is never removed (its passphrase can be changed).  A slot is a key file
whose public key is that of ``keys/default``: one sealing another master key
is damaged, found without running scrypt.

Each change is one storage ``put`` (store/atomic.py): a new slot is linked to
its name and never replaces one, ``passwd`` replaces one by rename; a crash
leaves the old slot or the new, never a torn one.

Must never: write anything but ``keys/<name>`` objects, keep a passphrase,
or hand out the master key other than inside ``Unlocked`` (never printed).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from replicator import constants as C
from replicator.constants import KEY_SLOTS_MAX
from replicator.errors import (
    IntegrityError,
    ObjectNotFound,
    ReplicatorError,
    RepositoryError,
    StorageError,
    UnsupportedVersion,
    UsageError,
    WrongPassphrase,
)
from replicator.format import keyfile as K
from replicator.format import layout as L
from replicator.repo.keyring import Keyring, unlock_master
from replicator.repo.local_sink import open_storage
from replicator.times import rfc3339

DEFAULT = L.DEFAULT_KEY_SLOT


def check_slot_name(name: str) -> str:
    """:raises UsageError: unless ``name`` can name a slot (``keys/<name>``)."""
    if not L.KEY_SLOT_RE.match(name) or ".." in name:
        raise UsageError(f"bad key slot name {name!r}: 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a "
                         f"letter or digit")
    return name


def local_identity() -> str:
    """``user@host`` of this process (the passwd database's name for the uid, not the environment)."""
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"[: C.KEY_INFO_MAX]


@dataclass(frozen=True)
class KeySlot:
    """One readable slot: its labels (None in a key file written before 0.4) and its key file."""

    name: str
    log2n: int
    created_by: str | None
    created: str | None
    changed_by: str | None
    changed: str | None
    data: bytes = field(repr=False)
    doc: dict = field(repr=False)

    @property
    def object(self) -> str:
        return L.key_name(self.name)

    @property
    def public_key(self) -> str:
        return str(self.doc["signing_public_key"]).lower()

    def as_dict(self) -> dict:
        return {"name": self.name, "object": self.object, "created_by": self.created_by, "created": self.created,
                "changed_by": self.changed_by, "changed": self.changed, "kdf_log2n": self.log2n}


@dataclass(frozen=True)
class DamagedSlot:
    """An object ``keys/<name>`` that is not a usable slot of this repository."""

    object: str
    error: ReplicatorError

    @property
    def name(self) -> str:
        return L.digest_of(self.object)

    @property
    def problem(self) -> str:
        return " ".join(str(self.error).removeprefix("integrity error: ").split())

    @property
    def warning(self) -> str:
        return f"key slot {self.object} is damaged ({self.problem}); skipped"

    def as_dict(self) -> dict:
        return {"name": self.name, "object": self.object, "problem": self.problem}

    def failure(self) -> ReplicatorError:
        """The error to raise when this slot was the one to open: it names the object."""
        if isinstance(self.error, IntegrityError):
            return IntegrityError(f"key slot {self.object}: {self.problem}")
        return self.error


@dataclass
class SlotListing:
    """Readable slots (``default`` first, then by name) and damaged ones."""

    slots: list[KeySlot]
    damaged: list[DamagedSlot]

    def find(self, name: str) -> KeySlot | None:
        return next((s for s in self.slots if s.name == name), None)

    def find_damaged(self, name: str) -> DamagedSlot | None:
        return next((d for d in self.damaged if d.name == name), None)

    def names(self) -> list[str]:
        return [s.name for s in self.slots] + [d.name for d in self.damaged]


@dataclass(frozen=True)
class Unlocked:
    """What a passphrase opened: the keyring, the slot that matched, how many slots were tried."""

    keyring: Keyring
    slot: KeySlot
    tried: int
    warnings: list[str]
    master: bytes = field(repr=False)  # for sealing another slot; never printed, never stored unsealed


def seal_slot(master: bytes, repo_id: bytes, name: str, passphrase: bytes, log2n: int, by: str, *,
              previous: KeySlot | None = None) -> bytes:
    """The key file of slot ``name``: ``master`` sealed under ``passphrase``, labelled with who and when.

    :param previous: the slot this one replaces (``passwd``): its creation labels are kept.
    :raises UsageError: ``log2n`` out of range.
    """
    if not C.SCRYPT_LOG2N_MIN <= log2n <= C.SCRYPT_LOG2N_MAX:
        raise UsageError(f"scrypt work factor must be {C.SCRYPT_LOG2N_MIN} to {C.SCRYPT_LOG2N_MAX}, not {log2n}")
    now, by = rfc3339(), by[: C.KEY_INFO_MAX]
    labels = {"name": name, "created_by": by, "created": now}
    if previous is not None:
        labels = {"name": name, "changed_by": by, "changed": now}
        for label in ("created_by", "created"):
            value = getattr(previous, label)
            if value is not None:
                labels[label] = value
    return K.make_keyfile(master, repo_id, passphrase, log2n, labels)


class KeySlots:
    """The key slots of one repository."""

    def __init__(self, storage, config: dict) -> None:
        """:param config: the parsed config (``repoconfig.parse_config``)."""
        self.storage = storage
        self.location = storage.location
        self.config = config
        self.repo_id: str = config["id"]

    @classmethod
    def open(cls, path: str) -> KeySlots:
        """:raises RepositoryNotFound: :raises RepositoryError: a foreign or unsupported config."""
        storage, config = open_storage(path)
        return cls(storage, config)

    # --- reading -------------------------------------------------------------
    def _read(self, name: str) -> KeySlot | DamagedSlot | None:
        try:
            data = self.storage.get(name)
        except ObjectNotFound:
            return None  # removed since the listing
        except StorageError as exc:
            return DamagedSlot(name, exc)
        slot = L.digest_of(name)
        try:
            doc = K.parse_keyfile(data)
            info = K.slot_info(doc, C.KEY_INFO_MAX)
            if info["name"] is not None and info["name"] != slot:
                raise IntegrityError(f"key file is damaged: it names itself {info['name']!r} (copied from "
                                     f"another slot?)")
        except (IntegrityError, UnsupportedVersion) as exc:
            return DamagedSlot(name, exc)
        return KeySlot(slot, int(doc["kdf"]["log2n"]), info["created_by"], info["created"], info["changed_by"],
                       info["changed"], data, doc)

    def listing(self) -> SlotListing:
        """Every ``keys/<name>`` object; names that are not slot names are not slots and are ignored."""
        slots: list[KeySlot] = []
        damaged: list[DamagedSlot] = []
        for name in sorted(n for n in self.storage.list(L.KEYS) if L.KEY_RE.match(n)):
            got = self._read(name)
            if isinstance(got, KeySlot):
                slots.append(got)
            elif got is not None:
                damaged.append(got)
        default = next((s for s in slots if s.name == DEFAULT), None)
        if default is not None:  # every slot seals the master key of keys/default: its public key says which
            for slot in [s for s in slots if s.public_key != default.public_key]:
                slots.remove(slot)
                damaged.append(DamagedSlot(slot.object, IntegrityError(
                    "its signing public key is not that of keys/default (it seals another master key)")))
        slots.sort(key=lambda s: (s.name != DEFAULT, s.name))
        damaged.sort(key=lambda d: d.object)
        return SlotListing(slots, damaged)

    # --- unlocking -------------------------------------------------------------
    def unlock(self, passphrase: bytes, name: str | None = None) -> Unlocked:
        """Open the master key with ``passphrase``: slot ``name`` only, else each readable slot in turn,
        the cheapest work factor first (``default`` first among equals), at most ``KEY_SLOTS_MAX``.

        :raises WrongPassphrase: no slot tried opens with it.
        :raises UsageError: there is no slot ``name``.
        :raises IntegrityError: slot ``name`` is damaged, or every slot is.
        """
        listing = self.listing()
        warnings = [d.warning for d in listing.damaged]
        if name is not None:
            bad = listing.find_damaged(name)
            if bad is not None:
                raise bad.failure()
            slot = listing.find(name)
            if slot is None:
                raise UsageError(f"repository {self.location} has no key slot named {name!r} (its slots: "
                                 f"{', '.join(listing.names()) or 'none'})")
            candidates = [slot]
        else:
            if not listing.slots:
                if len(listing.damaged) == 1:
                    raise listing.damaged[0].failure()  # as before key slots: the one key file's own error
                if not listing.damaged:
                    raise RepositoryError(self.location, f"has no key slot ({L.KEY} is missing)")
                raise IntegrityError(f"no readable key slot in {self.location}: "
                                     + "; ".join(f"{d.object}: {d.problem}" for d in listing.damaged))
            ordered = sorted(listing.slots, key=lambda s: (s.log2n, s.name != DEFAULT, s.name))
            candidates = ordered[:KEY_SLOTS_MAX]
            if len(ordered) > len(candidates):
                rest = ordered[len(candidates):]
                warnings.append(f"{len(rest)} key slot{'s' if len(rest) > 1 else ''} beyond the first "
                                f"{KEY_SLOTS_MAX} not tried: {', '.join(s.object for s in rest)}")
        repo_id = bytes.fromhex(self.repo_id)
        tried = 0
        for slot in candidates:
            tried += 1
            try:
                master = unlock_master(slot.data, repo_id, passphrase, self.location)
            except WrongPassphrase:
                continue
            except IntegrityError as exc:  # it opened, but its public key is not its master key's
                if name is not None:
                    raise
                warnings.append(DamagedSlot(slot.object, exc).warning)
                continue
            return Unlocked(Keyring.from_master(self.config, master, slot.doc), slot, tried, warnings, master)
        raise WrongPassphrase(self._where(listing, tried, name))

    def _where(self, listing: SlotListing, tried: int, name: str | None) -> str:
        """The repository, and what was tried when it holds more than one slot."""
        if name is not None:
            return f"{self.location} (key slot {name})" if len(listing.names()) > 1 else self.location
        if len(listing.slots) == 1 and not listing.damaged:
            return self.location
        damaged = (f"; damaged, skipped: {', '.join(d.object for d in listing.damaged)}"
                   if listing.damaged else "")
        return f"{self.location} (tried {tried} key slot{'s' if tried != 1 else ''}{damaged})"

    # --- changing --------------------------------------------------------------
    def add(self, unlocked: Unlocked, name: str, passphrase: bytes, *, log2n: int | None = None,
            by: str | None = None) -> KeySlot:
        """Seal the master key under ``passphrase`` in a new slot ``keys/<name>``.

        :param log2n: its scrypt work factor (default: that of the slot that unlocked).
        :raises UsageError: a bad or existing name, or ``KEY_SLOTS_MAX`` slots already.
        """
        check_slot_name(name)
        listing = self.listing()
        existing = listing.names()
        if name in existing or self.storage.exists(L.key_name(name)):
            raise UsageError(self._exists(name))
        if len(existing) >= KEY_SLOTS_MAX:
            raise UsageError(f"repository {self.location} already has {len(existing)} key slots, the most it may "
                             f"have: remove one first")
        data = seal_slot(unlocked.master, bytes.fromhex(self.repo_id), name, passphrase,
                         unlocked.slot.log2n if log2n is None else log2n, by or local_identity())
        try:
            self.storage.put(L.key_name(name), data)  # linked to its name: never replaces a slot
        except FileExistsError:
            raise UsageError(self._exists(name)) from None
        return self._written(name)

    def _exists(self, name: str) -> str:
        return (f"key slot {name!r} exists in repository {self.location}: change its passphrase with "
                f"'replicator key passwd --name {name}'")

    def change(self, unlocked: Unlocked, name: str | None, passphrase: bytes, *, log2n: int | None = None,
               by: str | None = None) -> KeySlot:
        """Seal the master key under a new ``passphrase`` in slot ``name`` (default: the one that unlocked),
        replacing it; its creation labels are kept.  Any slot's holder may change any slot.

        :param log2n: the new work factor (default: the slot's own, else that of the slot that unlocked).
        :raises UsageError: there is no slot ``name``.
        """
        name = unlocked.slot.name if name is None else check_slot_name(name)
        listing = self.listing()
        previous = listing.find(name)
        if previous is None and listing.find_damaged(name) is None:
            raise UsageError(self._missing(listing, name))
        if log2n is None:
            log2n = (previous or unlocked.slot).log2n
        data = seal_slot(unlocked.master, bytes.fromhex(self.repo_id), name, passphrase, log2n,
                         by or local_identity(), previous=previous)
        self.storage.put(L.key_name(name), data, overwrite=True)  # one rename: the old slot or the new
        return self._written(name)

    def remove(self, unlocked: Unlocked, name: str) -> None:
        """Delete slot ``name``.

        :raises UsageError: no such slot; it is the last readable one, ``default``, or the one that unlocked.
        """
        check_slot_name(name)
        listing = self.listing()
        slot = listing.find(name)
        if slot is None and listing.find_damaged(name) is None:
            raise UsageError(self._missing(listing, name))
        if slot is not None and not [s for s in listing.slots if s.name != name]:
            raise UsageError(f"{L.key_name(name)} is the last key slot of repository {self.location}: without it "
                             f"no passphrase opens the repository")
        if name == DEFAULT:
            raise UsageError(f"{L.KEY} cannot be removed: the other site's writers unlock it (serve hands it out) "
                             f"and key-less checks read its public key; change its passphrase with "
                             f"'replicator key passwd --name {DEFAULT}' instead")
        if name == unlocked.slot.name:
            raise UsageError(f"refusing to remove key slot {name}, the one this passphrase unlocked with: give the "
                             f"passphrase of another slot")
        self.storage.delete(L.key_name(name))

    def _missing(self, listing: SlotListing, name: str) -> str:
        return (f"repository {self.location} has no key slot named {name!r} (its slots: "
                f"{', '.join(listing.names())})")

    def _written(self, name: str) -> KeySlot:
        got = self._read(L.key_name(name))
        if not isinstance(got, KeySlot):
            raise IntegrityError(f"key slot {L.key_name(name)} does not read back as written")
        return got
