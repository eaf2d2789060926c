"""The restore tests that use ``restore_writers`` run twice: files placed on the restorer's thread
(writers=1, the live mirror's way) and by four writer threads (what `replicator restore` uses), so each
refusal, error, hole, privilege and metadata rule holds both ways."""
from __future__ import annotations

import pytest

from replicator.restore import writer


@pytest.fixture(params=[1, 4], ids=["serial", "writers4"])
def restore_writers(request, monkeypatch):
    monkeypatch.setitem(writer.restore.__kwdefaults__, "writers", request.param)
    return request.param
