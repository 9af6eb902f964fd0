"""Progress of a long catch-up (a replay): done, total, rate and ETA.

On a terminal one line is redrawn on standard error; elsewhere a
``replay_progress`` log event is written every `LOG_EVERY_S` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

LOG_EVERY_S = 5.0


class Progress:
    """Track per-partition offsets against their high watermarks."""

    def __init__(self, log: Any, stream: TextIO | None = None) -> None:
        self.log = log
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._first: dict[int, tuple[int, float]] = {}
        self._last_log = 0.0
        self._rows: list[tuple[int, int, int, float, float | None]] = []

    def update(self, next_offsets: Mapping[int, int], highs: Mapping[int, int]) -> None:
        """Report where each partition stands."""
        now = time.monotonic()
        rows = []
        for partition in sorted(highs):
            position = next_offsets.get(partition, 0)
            start, since = self._first.setdefault(partition, (position, now))
            done, total = position - start, highs[partition] - start
            rate = done / (now - since) if now > since else 0.0
            left = max(total - done, 0)
            eta_s = left / rate if rate > 0 else None
            rows.append((partition, done, total, rate, eta_s))
        if not rows:
            return
        self._rows = rows
        if self.tty:
            parts = [f"p{p} {d}/{t} {r:,.0f}/s eta {_eta(e)}" for p, d, t, r, e in rows]
            self.stream.write("\r" + " | ".join(parts) + "\x1b[K")
            self.stream.flush()
        elif now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            self._log_rows()

    def _log_rows(self) -> None:
        for partition, done, total, rate, eta_s in self._rows:
            self.log.info(
                "replay_progress",
                partition=partition,
                done=done,
                total=total,
                events_per_s=round(rate),
                eta_s=None if eta_s is None else round(eta_s),
            )

    def close(self) -> None:
        """End the terminal line, or log where each partition ended."""
        if self.tty and self._first:
            self.stream.write("\n")
        elif not self.tty and self._rows:
            self._log_rows()


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
