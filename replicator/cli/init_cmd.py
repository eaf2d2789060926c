"""replicator init REPO"""
from __future__ import annotations

from replicator import constants as C
from replicator.cli.common import emit, read_passphrase
from replicator.core.compress import DEFAULT_LEVEL
from replicator.core.params import ChunkerParams
from replicator.errors import UsageError
from replicator.format.repoconfig import check_compression_level
from replicator.repo.repository import Repository


def register(sub) -> None:
    from replicator.cli import add_common

    p = sub.add_parser("init", help="create a repository and its key", description=
                       "Create a new repository in REPO (a missing or empty directory) with a fresh master key "
                       "sealed under the passphrase.  Keep the passphrase safe: without it nothing can be restored.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--chunk-sizes", metavar="MIN,AVG,MAX",
                   help="content-defined chunking sizes in bytes (default: the measured default, see docs/CHUNKING.md)")
    p.add_argument("--compression-level", type=int, default=DEFAULT_LEVEL, metavar="N",
                   help=f"zstd level {C.COMPRESSION_LEVEL_MIN}-{C.COMPRESSION_LEVEL_MAX} (default {DEFAULT_LEVEL})")
    p.add_argument("--kdf-work", type=int, default=C.SCRYPT_LOG2N_DEFAULT, metavar="LOG2N",
                   help=f"scrypt cost as log2(N), {C.SCRYPT_LOG2N_MIN}-{C.SCRYPT_LOG2N_MAX} (default {C.SCRYPT_LOG2N_DEFAULT})")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    params = None
    if args.chunk_sizes:
        try:
            lo, avg, hi = (int(x) for x in args.chunk_sizes.split(","))
            params = ChunkerParams(lo, avg, hi)
        except ValueError as exc:
            raise UsageError(f"--chunk-sizes: {exc}") from None
    try:
        check_compression_level(args.compression_level)
    except ValueError as exc:
        raise UsageError(f"--compression-level: {exc}") from None
    if not C.SCRYPT_LOG2N_MIN <= args.kdf_work <= C.SCRYPT_LOG2N_MAX:
        raise UsageError(f"--kdf-work must be {C.SCRYPT_LOG2N_MIN} to {C.SCRYPT_LOG2N_MAX}")
    passphrase = read_passphrase(args, confirm=True)
    with Repository.init(args.repo, passphrase, params=params, log2n=args.kdf_work,
                         compression_level=args.compression_level) as repo:
        emit(args, {"repository": repo.location, "id": repo.id, "chunker": repo.params.to_dict()},
             [f"created repository {repo.location} (id {repo.id[:16]})"])
    return 0
