"""A model of one arm's batch latency: fixed cost plus per-row cost, kept current.

Fitted by exponentially weighted least squares over (rows, seconds) samples, so
recent batches count most and a change in speed shows within a few batches. When
recent batches all had the same size the slope cannot be fitted; the slope from
earlier (the load-time profile over several sizes) is kept and only the fixed part
moves. Samples far from the prediction twice in a row are taken as a change of
regime and outweigh the history. Recent raw latencies are kept for p50/p95 reporting
and for least_s, the fastest recent call, which decides whether calls run inline.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np

# Weight of the newest sample; 0.25 means a 3x slowdown dominates after ~3 batches.
DEFAULT_ALPHA = 0.25
# Two samples in a row more than this factor away from the prediction signal a
# change of regime (the arm got much slower or faster): history then counts for
# little. One such sample alone is taken as noise (a stall on a busy machine), so a
# single outlier cannot flip the router's choice.
CHANGE_RATIO = 2.0
CHANGE_SAMPLES = 2
CHANGE_KEEP = 0.1
_RECENT = 256
# Calls that least_s() looks back over.
LEAST_OF = 8


@dataclass(frozen=True)
class LatencyFit:
    fixed_s: float
    per_row_s: float
    samples: int

    def predict_s(self, rows: int) -> float:
        return max(0.0, self.fixed_s + self.per_row_s * rows)


class LatencyModel:
    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self.alpha = alpha
        self._w = 0.0  # decayed sums for weighted least squares
        self._x = 0.0
        self._y = 0.0
        self._xx = 0.0
        self._xy = 0.0
        self._fixed_s = 0.0
        self._per_row_s = 0.0
        self.samples = 0
        self._deviations = 0  # samples in a row far from the prediction
        self._min_rows = 1 << 62  # batch sizes seen so far
        self._max_rows = 0
        self._recent: deque[tuple[int, float]] = deque(maxlen=_RECENT)  # (rows, seconds)

    @property
    def fit(self) -> LatencyFit:
        return LatencyFit(self._fixed_s, self._per_row_s, self.samples)

    def predict_s(self, rows: int) -> float:
        return self.fit.predict_s(rows)

    def observe(self, rows: int, seconds: float) -> None:
        keep = 1.0 - self.alpha
        # Only a size already seen can signal a change: a new size is extrapolation.
        if self.samples and self._min_rows <= rows <= self._max_rows:
            predicted = self.predict_s(rows)
            if predicted > 0 and not (
                predicted / CHANGE_RATIO <= seconds <= predicted * CHANGE_RATIO
            ):
                self._deviations += 1
                if self._deviations >= CHANGE_SAMPLES:
                    keep *= CHANGE_KEEP
                    self._deviations = 0
            else:
                self._deviations = 0
        self._min_rows = min(self._min_rows, rows)
        self._max_rows = max(self._max_rows, rows)
        self._w = self._w * keep + 1.0
        self._x = self._x * keep + rows
        self._y = self._y * keep + seconds
        self._xx = self._xx * keep + rows * rows
        self._xy = self._xy * keep + rows * seconds
        self.samples += 1
        self._recent.append((rows, seconds))
        mean_x = self._x / self._w
        mean_y = self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x > 1e-6 * max(1.0, mean_x * mean_x):
            slope = (self._xy / self._w - mean_x * mean_y) / var_x
            # A noisy fit can come out negative; cost never falls with more rows.
            self._per_row_s = max(0.0, slope)
        elif self.samples == 1 and rows > 1:
            # One size seen so far: charge it all per row until sizes vary.
            self._per_row_s = seconds / rows
        # Keep the slope while it explains the level; else scale it down to fit.
        if self._per_row_s * mean_x > mean_y:
            self._per_row_s = mean_y / mean_x if mean_x > 0 else 0.0
        self._fixed_s = mean_y - self._per_row_s * mean_x

    def last_sample(self) -> tuple[int, float] | None:
        """The newest (rows, seconds) observed, if any."""
        return self._recent[-1] if self._recent else None

    def least_s(self, rows: int, of: int = LEAST_OF) -> float:
        """The fastest of the last `of` calls, scaled to `rows` by the fitted slope.

        What a call costs when nothing else is in the way. A measured call can only
        come out too slow: by a wait for the GIL (a thread that had it when the call
        released it), a garbage-collector pause, a preemption. So a single slow call
        says little, and a call that is really slower shows in all the recent ones.
        """
        if not self._recent:
            return 0.0
        per_row = self._per_row_s
        last = itertools.islice(reversed(self._recent), of)
        return max(0.0, min(s - per_row * r for r, s in last) + per_row * rows)

    def percentile_ms(self, q: float) -> float:
        if not self._recent:
            return 0.0
        return float(np.percentile(np.fromiter((s for _, s in self._recent), float), q) * 1000)
