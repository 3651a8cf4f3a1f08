"""The live-request sampler: bounded, uniform, thread-safe, saved only when asked."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from infergate.optimize import ReservoirSampler, load_npz
from infergate.schema.errors import InvalidInput
from tests.optimize.conftest import DIGITS_SPEC


def batch(start: int, n: int) -> dict[str, np.ndarray]:
    """Rows whose first value is their serial number, so a sample can be counted."""
    x = np.zeros((n, 64), np.float32)
    x[:, 0] = np.arange(start, start + n)
    return {"x": x}


def test_it_keeps_at_most_capacity_rows_and_copies_them() -> None:
    sampler = ReservoirSampler(8, seed=1)
    source = batch(0, 5)
    sampler.offer(source)
    source["x"][:] = -1  # the request's buffer is reused: the sample must not change
    assert len(sampler) == 5 and sampler.snapshot().inputs["x"][:, 0].min() == 0
    for start in range(5, 1000, 7):
        sampler.offer(batch(start, 7))
    assert len(sampler) == 8 and sampler.seen == 1006


def test_every_row_is_equally_likely_to_be_kept() -> None:
    # 2000 runs of 100 rows into 10 slots: each row is kept with p = 0.1, i.e. ~200
    # times; a sampler biased to early or late rows would be far off.
    counts = np.zeros(100)
    for run in range(2000):
        sampler = ReservoirSampler(10, seed=run)
        for start in range(0, 100, 4):
            sampler.offer(batch(start, 4))
        kept = sampler.snapshot().inputs["x"][:, 0].astype(int)
        counts[kept] += 1
    assert counts.sum() == 20000
    assert counts.min() > 140 and counts.max() < 260
    assert abs(counts[:50].sum() - counts[50:].sum()) < 600


def test_non_finite_and_misshapen_rows_are_skipped() -> None:
    sampler = ReservoirSampler(4, seed=0)
    rows = batch(0, 3)
    rows["x"][1, 5] = np.nan
    sampler.offer(rows)
    sampler.offer({"x": np.zeros((2, 63), np.float32)})  # another row shape
    assert len(sampler) == 2 and sampler.skipped == 3


def test_it_is_safe_from_many_threads() -> None:
    sampler = ReservoirSampler(16, seed=0)

    def feed(offset: int) -> None:
        for start in range(0, 400, 8):
            sampler.offer(batch(offset + start, 8))

    threads = [threading.Thread(target=feed, args=(i * 1000,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sampler.seen == 1600 and len(sampler) == 16


def test_nothing_is_written_until_save_and_then_it_loads_as_data(tmp_path: Path) -> None:
    sampler = ReservoirSampler(6, seed=0)
    sampler.offer(batch(0, 10))
    assert list(tmp_path.iterdir()) == []
    path = sampler.save(tmp_path / "live.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["live.npz"]
    assert load_npz(path, DIGITS_SPEC).rows == 6


def test_bad_capacity_and_empty_snapshot_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="capacity of at least 1"):
        ReservoirSampler(0)
    with pytest.raises(InvalidInput, match="holds no rows"):
        ReservoirSampler(3).snapshot()
