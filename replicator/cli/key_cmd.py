"""replicator key list|add|passwd|remove REPO: the passphrases (key slots) of a repository (repo/keys.py)."""
from __future__ import annotations

import os
import socket

from replicator import constants as C
from replicator.cli.common import add_audit_option, audit, emit, printable, read_passphrase, warn
from replicator.errors import UsageError
from replicator.format.layout import DEFAULT_KEY_SLOT
from replicator.repo.keys import KeySlot, KeySlots, Unlocked, check_slot_name
from replicator.transport.url import is_remote

ACTIONS = {
    "list": "list the key slots and which one this passphrase opens",
    "add": "seal the master key under one more passphrase, in a new slot keys/NAME",
    "passwd": "change the passphrase of one slot (default: the one that opens with the passphrase given)",
    "remove": "delete a slot: its passphrase no longer opens this repository's key objects",
}


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("key", help="list, add, change or remove the passphrases (key slots) of a repository",
                       description="A repository's master key is sealed once per passphrase, each in its own "
                                   "key slot keys/NAME; keys/default is the first and always stays (serve hands it "
                                   "to the other site's writers).  Every change is appended to the audit log.  Run "
                                   "these where the repository is (a path, not ssh://).  See docs/OPERATIONS.md "
                                   "'Keys and passphrases'.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in ACTIONS.items():
        a = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        a.add_argument("repo", metavar="REPO")
        a.add_argument("--key", metavar="NAME", help="unlock with key slot NAME only (default: try each slot, "
                                                     "the cheapest first)")
        if action in ("add", "passwd", "remove"):
            a.add_argument("--name", metavar="NAME", required=action != "passwd",
                           help="the key slot (a-z, 0-9, '.', '_', '-'; at most 64)"
                                + ("" if action != "passwd" else "; default: the one that unlocked"))
        if action in ("add", "passwd"):
            a.add_argument("--new-passphrase-file", metavar="FILE",
                           help="read the new passphrase from FILE (else asked twice on the terminal)")
            a.add_argument("--kdf-work", type=int, metavar="LOG2N",
                           help=f"scrypt cost of the new seal, {C.SCRYPT_LOG2N_MIN}-{C.SCRYPT_LOG2N_MAX} "
                                f"(default: that of the slot it replaces, else of the slot that unlocked)")
        if action != "list":
            add_audit_option(a)
        add_common(a)
        a.set_defaults(func=run)


def _who() -> str | None:
    """Who makes the change, for the slot's labels: the user sudo was run by, else the process's user."""
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo}@{socket.gethostname()}" if sudo else None


def _describe(slot: KeySlot) -> str:
    made = f"created {slot.created or '?'} by {printable(slot.created_by or '?')}"
    if slot.changed:
        made += f", changed {slot.changed} by {printable(slot.changed_by or '?')}"
    return f"{made}, scrypt 2^{slot.log2n}"


def run(args) -> int:
    action = args.action
    if is_remote(args.repo):
        raise UsageError(f"'key {action}' is not supported over ssh://: run it at the site that holds the repository, "
                         f"on its directory (the key slots are objects there; over ssh:// only keys/default is read)")
    name = getattr(args, "name", None)
    if name is not None:
        check_slot_name(name)
    kdf = getattr(args, "kdf_work", None)
    if kdf is not None and not C.SCRYPT_LOG2N_MIN <= kdf <= C.SCRYPT_LOG2N_MAX:
        raise UsageError(f"--kdf-work must be {C.SCRYPT_LOG2N_MIN} to {C.SCRYPT_LOG2N_MAX}")
    slots = KeySlots.open(args.repo)
    try:
        unlocked = slots.unlock(read_passphrase(args), args.key)
        for message in unlocked.warnings:
            warn(message)
        if action == "list":
            return _list(args, slots, unlocked)
        return _change(args, slots, unlocked, name, kdf)
    finally:
        slots.storage.close()


def _list(args, slots: KeySlots, unlocked: Unlocked) -> int:
    listing = slots.listing()
    width = max(len(s.name) for s in listing.slots)
    lines = [f"{'*' if s.name == unlocked.slot.name else ' '} {s.name:{width}}  {_describe(s)}" for s in listing.slots]
    lines += [f"! {d.object}: damaged ({d.problem})" for d in listing.damaged]
    lines.append(f"{len(listing.slots)} key slot{'s' if len(listing.slots) != 1 else ''}; * opens with this "
                 f"passphrase (tried {unlocked.tried})")
    emit(args, {"repository": slots.location, "id": slots.repo_id, "unlocked_with": unlocked.slot.name,
                "tried": unlocked.tried, "slots": [s.as_dict() for s in listing.slots],
                "damaged": [d.as_dict() for d in listing.damaged]}, lines)
    return C.EXIT_OK


def _change(args, slots: KeySlots, unlocked: Unlocked, name: str | None, kdf: int | None) -> int:
    action = args.action
    record: dict = {"event": f"key-{action}", "repository": slots.repo_id, "unlocked_with": unlocked.slot.name}
    if action == "remove":
        assert name is not None  # required by the parser
        slots.remove(unlocked, name)
        record["slot"] = name
        lines = [f"removed key slot {name} (keys/{name}), unlocked with {unlocked.slot.name}",
                 "copies of this key object made before (backups of the repository, a copy of its directory) "
                 "still open with its passphrase: see docs/SECURITY.md"]
        summary: dict = {"removed": name}
    else:
        passphrase = read_passphrase(args, new=True)
        if action == "add":
            assert name is not None  # required by the parser
            slot = slots.add(unlocked, name, passphrase, log2n=kdf, by=_who())
            lines = [f"added key slot {slot.name} ({slot.object}), unlocked with {unlocked.slot.name}"]
        else:
            slot = slots.change(unlocked, name, passphrase, log2n=kdf, by=_who())
            lines = [f"changed the passphrase of key slot {slot.name} ({slot.object}), unlocked with "
                     f"{unlocked.slot.name}"]
            if slot.name == DEFAULT_KEY_SLOT:
                lines.append("writers over ssh:// unlock keys/default: give the new passphrase to the other "
                             "site's daemon and syncs, and to serve --mirror here")
        record.update(slot=slot.name, kdf_log2n=slot.log2n)
        summary = {action: slot.as_dict()}
    emit(args, {"repository": slots.location, "id": slots.repo_id, "unlocked_with": unlocked.slot.name, **summary},
         lines)
    return C.EXIT_OK if audit(args, record) else C.EXIT_WARNING
