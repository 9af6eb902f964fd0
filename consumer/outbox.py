"""The outbox: what each contact's Crisp profile should become, and when.

The consumer writes a contact's desired Crisp state into the contact's own
hash in the same atomic step as its stage state (see `consumer.store`); this
module owns the two rules about those entries:

* the canonical JSON of a desired state, so that "unchanged" is a string
  comparison and a burst of changes that ends where it began costs nothing;
* the debounce: an entry is due ``debounce`` after the last change, but never
  later than ``max_delay`` after the first change still pending.
"""

from __future__ import annotations

import json
from typing import Any

from consumer.engine import DesiredCrisp


def encode_desired(desired: DesiredCrisp) -> str:
    """Return the canonical JSON of a desired state (sorted, no spaces)."""
    return json.dumps(
        {"segments": sorted(set(desired.segments)), "data": dict(desired.data)},
        sort_keys=True,
        separators=(",", ":"),
    )


def decode_desired(text: str) -> DesiredCrisp:
    """Parse the canonical JSON of a desired state."""
    raw: dict[str, Any] = json.loads(text)
    return DesiredCrisp(segments=tuple(raw["segments"]), data=dict(raw["data"]))


#: The desired state of a contact in no stage: nothing to tell Crisp.
NOTHING = encode_desired(DesiredCrisp(segments=(), data={}))


def due_ms(
    now_ms: int, first_pending_ms: int | None, debounce_s: float, max_delay_s: float
) -> tuple[int, int]:
    """Return (due time, first pending time) for a change made now."""
    first = now_ms if first_pending_ms is None else first_pending_ms
    due = min(now_ms + int(debounce_s * 1000), first + int(max_delay_s * 1000))
    return due, first
