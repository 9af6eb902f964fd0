"""Replay progress away from a terminal: log lines, the last one at the end."""

from __future__ import annotations

import io
from typing import Any

from consumer.progress import Progress


class Lines:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def test_a_short_replay_still_logs_where_it_ended() -> None:
    """Lines are spaced out; a replay shorter than that logged only its
    start (done 0) until close logged where every partition ended."""
    log = Lines()
    progress = Progress(log, io.StringIO())
    progress.update({0: 100, 1: 0}, {0: 400, 1: 50})
    progress.update({0: 400, 1: 50}, {0: 400, 1: 50})
    progress.close()
    first, last = log.lines[:2], log.lines[-2:]
    assert [(line["partition"], line["done"]) for line in first] == [(0, 0), (1, 0)]
    assert [(line["partition"], line["done"], line["total"]) for line in last] == [
        (0, 300, 300),
        (1, 50, 50),
    ]
