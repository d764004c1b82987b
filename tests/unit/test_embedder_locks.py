"""How many embedding calls may run at once."""

from __future__ import annotations

import pytest

from ragline.models import embedders
from ragline.models.embedders import CallLocks


def slots(locks: CallLocks) -> int:
    taken = 0
    while locks.batch.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        locks.batch.release()
    return taken


def test_batches_run_as_many_at_once_as_the_cores_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every core per call: one batch at a time; one thread per call: one batch per core."""
    monkeypatch.setattr(embedders, "available_cores", lambda: 4)
    assert slots(CallLocks(0)) == 1
    assert slots(CallLocks(1)) == 4
    assert slots(CallLocks(2)) == 2
    assert slots(CallLocks(8)) == 1
