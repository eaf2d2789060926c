"""ChunkerParams: validation rules and the repository-config encoding."""
import pytest

from replicator.core.params import DEFAULT_PARAMS, KIB, MIB, ChunkerParams


def test_default_is_valid_and_roundtrips():
    assert ChunkerParams.from_dict(DEFAULT_PARAMS.to_dict()) == DEFAULT_PARAMS
    assert DEFAULT_PARAMS.max_size >= 2 * DEFAULT_PARAMS.avg_size


def test_to_dict_keys():
    assert ChunkerParams(64, 256, 1024).to_dict() == {"min": 64, "avg": 256, "max": 1024}


def test_frozen():
    p = ChunkerParams(64, 256, 1024)
    with pytest.raises(AttributeError):
        p.avg_size = 512  # type: ignore[misc]


@pytest.mark.parametrize("lo, avg, hi", [
    (64, 256, 256),          # min < avg == max is allowed
    (256, 256, 256),         # all equal is allowed
    (MIB, 16 * MIB, 64 * MIB),
])
def test_valid_edges(lo, avg, hi):
    ChunkerParams(lo, avg, hi)


@pytest.mark.parametrize("lo, avg, hi, message", [
    (64, 1000, 4096, "power of two"),
    (64, 128, 4096, "power of two >= 256"),
    (63, 256, 1024, "min_size must be >= 64"),
    (512, 256, 1024, "min_size <= avg_size <= max_size"),
    (64, 1024, 512, "min_size <= avg_size <= max_size"),
    (KIB, 16 * MIB, 64 * MIB + 1, "max_size must be <="),
    (64.0, 256, 1024, "must be an int"),
    (True, 256, 1024, "must be an int"),
])
def test_invalid(lo, avg, hi, message):
    with pytest.raises(ValueError, match=message) as info:
        ChunkerParams(lo, avg, hi)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("d", [
    {"min": 64, "avg": 256},
    {"min": 64, "avg": 256, "max": 1024, "nc": 2},
])
def test_from_dict_rejects_wrong_keys(d):
    with pytest.raises(ValueError, match="keys"):
        ChunkerParams.from_dict(d)
