"""A bounded, uniform sample of live request inputs (reservoir sampling, algorithm R).

The gateway may feed every batch a model serves into a sampler (opt-in per model);
after n rows offered, each of them is in the sample with probability capacity / n,
whatever n is, in memory bounded by `capacity` rows. Nothing is written to disk
unless `save` is called. Rows are copied on the way in: request tensors are views of
the request's bytes, which go away with it.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from infergate.optimize.data import DataSet
from infergate.schema.errors import InvalidInput


class ReservoirSampler:
    """Keeps a uniform random sample of at most `capacity` rows; thread-safe."""

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        if capacity < 1:
            raise InvalidInput(f"a reservoir needs a capacity of at least 1 row, not {capacity}")
        self.capacity = capacity
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rows: list[dict[str, np.ndarray]] = []
        self._shapes: dict[str, tuple[tuple[int, ...], np.dtype[np.generic]]] | None = None
        self.seen = 0  # rows offered and eligible
        self.skipped = 0  # rows refused: non-finite, or a shape/dtype unlike the first

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def offer(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Consider every row of one batch (arrays with rows along axis 0)."""
        if not inputs:
            return
        counts = {int(a.shape[0]) if a.ndim else 0 for a in inputs.values()}
        if len(counts) != 1:
            with self._lock:
                self.skipped += max(counts)
            return
        (rows,) = counts
        with self._lock:
            if self._shapes is None:
                self._shapes = {k: (tuple(v.shape[1:]), v.dtype) for k, v in inputs.items()}
            if {k: (tuple(v.shape[1:]), v.dtype) for k, v in inputs.items()} != self._shapes:
                # Another signature (names, row shape, dtype) than the sample holds:
                # it could not be stacked with it.
                self.skipped += rows
                return
            finite = np.ones(rows, dtype=bool)
            for v in inputs.values():
                if v.dtype.kind in "fc" and v.size:
                    finite &= np.isfinite(v.reshape(rows, -1)).all(axis=1)
            for i in range(rows):
                if not finite[i]:
                    self.skipped += 1
                    continue
                self._consider({k: v[i] for k, v in inputs.items()})

    def _consider(self, row: Mapping[str, np.ndarray]) -> None:
        # Algorithm R: the first k rows fill the reservoir; row n (0-based) replaces
        # a uniformly chosen slot with probability k / (n + 1).
        n = self.seen
        self.seen += 1
        if n < self.capacity:
            self._rows.append({k: np.array(v, copy=True) for k, v in row.items()})
            return
        slot = self._rng.randint(0, n)
        if slot < self.capacity:
            self._rows[slot] = {k: np.array(v, copy=True) for k, v in row.items()}

    def snapshot(self, source: str = "live requests") -> DataSet:
        """The sample so far as a DataSet (copies); InvalidInput when it is empty."""
        with self._lock:
            if not self._rows:
                raise InvalidInput("the reservoir holds no rows yet")
            names = list(self._rows[0])
            inputs = {n: np.stack([row[n] for row in self._rows]) for n in names}
            seen = self.seen
        return DataSet(inputs, source=f"{source}: {len(inputs[names[0]])} of {seen} rows")

    def save(self, path: Path) -> Path:
        """Write the sample as an .npz data set, atomically (only when asked)."""
        data = self.snapshot()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with tmp.open("wb") as out:
                np.savez(out, allow_pickle=False, **dict(data.inputs))
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._shapes = None
            self.seen = 0
            self.skipped = 0
