"""Magic bytes, version ranges, size limits and exit codes.

Every on-disk and on-wire constant lives here so that docs/FORMAT.md and the
code can be checked against one list.  Changing any value below changes the
repository format: bump FORMAT_VERSION_CURRENT and document it in FORMAT.md.
"""

# --- repository format (docs/FORMAT.md) -------------------------------------
FORMAT_VERSION_MIN = 1
FORMAT_VERSION_MAX = 1
FORMAT_VERSION_CURRENT = 1

REPO_MAGIC = "replicator-repository"  # "magic" field of the config object

PACK_MAGIC = b"RPLPACK\x00"  # first 8 bytes of every pack
PACK_FOOTER_MAGIC = b"RPLPEND\x00"  # last 8 bytes of every pack
SNAPSHOT_MAGIC = b"RPLSNAP\x00"  # first 8 bytes of every snapshot object
KEYFILE_MAGIC = "replicator-key"

PACK_SALT_SIZE = 32
PACK_HEADER_SIZE = 8 + 2 + 2 + PACK_SALT_SIZE  # magic, version, reserved, salt
PACK_FOOTER_SIZE = 4 + 8  # table length (u32 LE) + footer magic
PACK_TABLE_ENTRY_SIZE = 1 + 32 + 8 + 4 + 4  # type, id, offset, stored length, raw length
PACK_TARGET_SIZE = 16 * 1024 * 1024  # a pack is closed once it holds this much
PACK_MAX_BLOBS = 1 << 20  # refuse tables claiming more entries

# Blob types.  The type is part of every blob's associated data.
BLOB_DATA = 0
BLOB_TREE = 1
BLOB_TYPES = (BLOB_DATA, BLOB_TREE)

# First plaintext byte of every blob: how the payload after it is stored.
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1

# AEAD associated data prefixes.  A blob's AAD is
#   BLOB_AAD_PREFIX || type (1 byte) || chunk id (32 bytes)
# so a blob cannot be moved to another id or type; the table's AAD is
#   TABLE_AAD_PREFIX || pack salt (32 bytes)
# so a table cannot be moved to another pack.
BLOB_AAD_PREFIX = b"replicator/blob/v1\x00"
TABLE_AAD_PREFIX = b"replicator/table/v1\x00"
SNAPSHOT_AAD_PREFIX = b"replicator/snapshot/v1\x00"
KEY_AAD_PREFIX = b"replicator/key/v1\x00"

# Nonces inside a pack: 4-byte big-endian domain || 8-byte big-endian counter.
NONCE_DOMAIN_BLOB = 0
NONCE_DOMAIN_TABLE = 0xFFFFFFFF

ID_SIZE = 32
KEY_SIZE = 32
MAX_BLOB_SIZE = 64 * 1024 * 1024  # largest plaintext a blob may claim (chunks, trees)
MAX_TREE_SIZE = MAX_BLOB_SIZE
MAX_SNAPSHOT_SIZE = 1024 * 1024

# Key derivation: HKDF-SHA256(master, salt=repository id, info=HKDF_INFO_PREFIX + purpose)
HKDF_INFO_PREFIX = b"replicator/v1/"
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_LOG2N_DEFAULT = 17
SCRYPT_LOG2N_MIN = 14
SCRYPT_LOG2N_MAX = 22
# At most this many key slots (keys/<name>) are written, and tried at an unlock: each try is one scrypt
# run, so a wrong passphrase costs at most KEY_SLOTS_MAX of them (16 x 0.3 s at the default work factor).
KEY_SLOTS_MAX = 16
KEY_INFO_MAX = 256  # longest "created_by" / "changed_by" a key slot carries (informational, clear)
PASSPHRASE_COMMAND_TIMEOUT = 60.0  # seconds a --passphrase-command may take before it counts as failed

# What the key-less prune (repo/local_sink.py) counts; in this order, PRUNE_OK's u64 fields (docs/PROTOCOL.md).
PRUNE_COUNTERS = ("snapshots", "packs_total", "packs_deleted", "bytes_deleted", "id_lists_deleted", "refs_deleted",
                  "packs_kept_unlisted")

# --- exit codes (docs/OPERATIONS.md) ------------------------------------------
EXIT_OK = 0
EXIT_WARNING = 1  # finished, but some files were skipped or could not be restored
EXIT_USAGE = 2  # bad command line or configuration
EXIT_REPOSITORY = 3  # repository missing, foreign, locked or of an unsupported version
EXIT_PASSPHRASE = 4  # wrong passphrase
EXIT_INTEGRITY = 5  # corrupted or tampered data
EXIT_STORAGE = 6  # I/O error: disk full, permission denied on the repository
EXIT_TRANSPORT = 7  # the other site: connection failed or dropped, host key refused, protocol violation
EXIT_DIVERGED = 8  # the destination's history is not what this site committed there: older, missing or forked
EXIT_SOURCE = 9  # the source looks vanished or replaced (empty, shrunk, other filesystem, no marker); not committed
# A listening address another process holds (serve --listen): not a usage error (2), which systemd units
# do not restart (RestartPreventExitStatus=2), because the holder may be the instance still stopping.
EXIT_ADDRESS_IN_USE = 10
EXIT_INTERNAL = 70  # a bug: please report it with the REPLICATOR_DEBUG=1 traceback
EXIT_INTERRUPTED = 130

# --- a source that vanished (sync/engine.py; docs/OPERATIONS.md "A source that vanished") --------
# A sync that finds fewer files than the latest snapshot of its source by more than this share is
# refused unless confirmed.  Half: an unmounted, half-mounted or unreadable volume loses most or all
# of its files at once, while deletions by people and applications on clinical data come a few at a
# time between two syncs; a purge of more than half a tree is a planned act an operator can confirm.
DEFAULT_MAX_SHRINK = 0.5

# --- what a sync leaves out (sync/select.py; docs/OPERATIONS.md "Choosing what is synced") -------
# The Cache Directory Tagging Specification (https://bford.info/cachedir/): a directory holding a
# regular file CACHEDIR.TAG that starts with these 43 bytes is a cache.  restic, borg and GNU tar
# check the same signature, so a stray file of that name never hides data.
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
# An exclude file is a short list typed by people; a larger one is a wrong path (a log, an image).
MAX_EXCLUDE_FILE_BYTES = 1 << 20

# --- compression (core/compress.py, format/repoconfig.py) -----------------------------------------
# zstd accepts more (negative "fast" levels, 20-22 "ultra"), but ultra levels need up to 128 MiB of
# window per compressor thread for no gain on 1 MiB chunks, and a config is plain text the receiver
# hands out: a level outside this range is refused when the repository is opened.
COMPRESSION_LEVEL_MIN = 1
COMPRESSION_LEVEL_MAX = 19

# --- the daemon (app/config.py) --------------------------------------------------------------------
MAX_STREAMS = 64  # packs unacknowledged over SSH at most (none is held once written: only its answer waits)
