"""A progress bar for uploads, on stderr or any text stream (no dependencies).

It is a `Progress` callback: AdminClient.register calls it with the file's name, the
bytes sent so far and its size as the chunks go out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

# progress(filename, bytes sent so far, its size): called as chunks go out.
Progress = Callable[[str, int, int], None]


class ProgressBar:
    """Upload progress on a terminal: one line redrawn in place, percentage and MB/s.

    Not on a terminal (a log file, CI), a line per 25% of a large file instead.
    """

    WIDTH = 24
    REDRAW_S = 0.1
    LARGE_BYTES = 8 * 1024 * 1024

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._tty = self._stream.isatty()
        self._started = 0.0
        self._drawn = 0.0
        self._quarter = -1

    def __call__(self, filename: str, sent: int, total: int) -> None:
        now = time.monotonic()
        if sent == 0:
            self._started, self._drawn, self._quarter = now, 0.0, -1
        done = sent >= total
        if self._tty:
            if done or now - self._drawn >= self.REDRAW_S:
                self._drawn = now
                self._stream.write("\r" + self._line(filename, sent, total, now))
                if done:
                    self._stream.write("\n")
        elif done:
            self._stream.write(self._line(filename, sent, total, now) + "\n")
        elif total >= self.LARGE_BYTES and (quarter := 4 * sent // total) > self._quarter:
            self._quarter = quarter
            self._stream.write(self._line(filename, sent, total, now) + "\n")
        self._stream.flush()

    def _line(self, filename: str, sent: int, total: int, now: float) -> str:
        fraction = sent / total if total else 1.0
        filled = int(fraction * self.WIDTH)
        elapsed = max(now - self._started, 1e-6)
        return (
            f"uploading {filename} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"{fraction:4.0%} {sent / 1e6:.1f}/{total / 1e6:.1f} MB "
            f"{sent / 1e6 / elapsed:.1f} MB/s"
        )

    def close(self) -> None:
        self._stream.flush()
