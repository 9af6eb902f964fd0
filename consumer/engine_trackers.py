"""Trackers: the few numbers per contact that the plan's conditions need.

The engine compiles each plan once into trackers, one per distinct
(event, filter) and kind, and keeps only what the conditions read:

- `CountTracker`: how often, saturating at the largest threshold needed;
- `WindowTracker`: the latest event times, only as many as the largest
  threshold needs and only as old as the longest window;
- `LastTracker`: the latest event time (inactivity);
- `TotalTracker`: sum, minimum or maximum of a property, ever;
- `BucketTracker`: the same within a window, in `BUCKETS_PER_WINDOW`
  time-aligned buckets. An event stays in a windowed sum, minimum or
  maximum until the end of its bucket has left the window, so the window is
  up to 1/16 longer than written; counts and inactivity are exact.

A tracker's value lives in the contact's ``values`` list at ``slot`` and is
immutable (numbers, tuples), so copying a state is a shallow list copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from consumer.conditions import PropertyTest, Threshold, Where, is_number
from consumer.events import PropertyValue

BUCKETS_PER_WINDOW = 16

Values = list[Any]
Filter = Callable[[Mapping[str, PropertyValue]], bool] | None


def compile_filter(where: Where) -> Filter:
    """Return a predicate over event properties, or None for no filter."""
    if not where:
        return None
    tests: tuple[PropertyTest, ...] = where
    if len(tests) == 1:
        return tests[0].holds
    return lambda properties: all(test.holds(properties) for test in tests)


def needed_count(thresholds: tuple[Threshold, ...]) -> int:
    """Return how far a count must go to decide every threshold."""
    need = 1
    for threshold in thresholds:
        value = threshold.value
        if threshold.op in ("gte", "lt"):
            need = max(need, math.ceil(value))
        else:
            need = max(need, math.floor(value) + 1)
    return need


class Tracker:
    """One kind of fact kept per contact, at ``values[slot]``."""

    __slots__ = ("accepts", "event", "key", "slot", "where")
    kind = ""
    #: whether old entries leave the value as time passes (see `prune`)
    expires = False

    def __init__(self, key: tuple[Any, ...], event: str, where: Where) -> None:
        self.key = key
        self.event = event
        self.where = where
        self.accepts = compile_filter(where)
        self.slot = -1

    def initial(self) -> Any:
        """Return the value of a contact that never did the event."""
        return None

    def describe(self) -> str:
        """Return the text that identifies the tracker in a layout."""
        return repr(self.key)

    def update(
        self, values: Values, properties: Mapping[str, PropertyValue], at: int, now: int
    ) -> bool:
        """Record one matching event; return whether the value changed."""
        raise NotImplementedError

    def prune(self, values: Values, now: int) -> None:
        """Forget what no window can see any more."""


class CountTracker(Tracker):
    """How many matching events, up to ``cap`` (None: no cap)."""

    __slots__ = ("cap",)
    kind = "count"

    def __init__(self, key: tuple[Any, ...], event: str, where: Where) -> None:
        super().__init__(key, event, where)
        self.cap: int | None = 0

    def initial(self) -> int:
        return 0

    def describe(self) -> str:
        return f"{self.key!r} cap={self.cap}"

    def update(
        self, values: Values, properties: Mapping[str, PropertyValue], at: int, now: int
    ) -> bool:
        count = values[self.slot]
        if self.cap is not None and count >= self.cap:
            return False
        values[self.slot] = count + 1
        return True


class WindowTracker(Tracker):
    """The latest ``keep`` event times, none older than ``horizon_ms``."""

    __slots__ = ("horizon_ms", "keep")
    kind = "window"
    expires = True

    def __init__(self, key: tuple[Any, ...], event: str, where: Where) -> None:
        super().__init__(key, event, where)
        self.keep = 1
        self.horizon_ms = 0

    def initial(self) -> tuple[int, ...]:
        return ()

    def describe(self) -> str:
        return f"{self.key!r} keep={self.keep} horizon={self.horizon_ms}"

    def update(
        self, values: Values, properties: Mapping[str, PropertyValue], at: int, now: int
    ) -> bool:
        oldest = now - self.horizon_ms
        if at <= oldest:
            return False
        times: tuple[int, ...] = values[self.slot]
        if not times or at >= times[-1]:
            times = (*times, at)
        else:
            position = len(times)
            while position and times[position - 1] > at:
                position -= 1
            times = (*times[:position], at, *times[position:])
        start = max(0, len(times) - self.keep)
        while start < len(times) and times[start] <= oldest:
            start += 1
        values[self.slot] = times[start:]
        return True

    def prune(self, values: Values, now: int) -> None:
        times: tuple[int, ...] = values[self.slot]
        oldest = now - self.horizon_ms
        if times and times[0] <= oldest:
            values[self.slot] = tuple(t for t in times if t > oldest)


class LastTracker(Tracker):
    """The time of the latest matching event (late events cannot lower it)."""

    __slots__ = ()
    kind = "last"

    def update(
        self, values: Values, properties: Mapping[str, PropertyValue], at: int, now: int
    ) -> bool:
        last = values[self.slot]
        if last is not None and last >= at:
            return False
        values[self.slot] = at
        return True


def _combine(function: str, old: Any, value: float) -> float:
    if old is None:
        return value
    if function == "sum":
        return old + value  # type: ignore[no-any-return]
    if function == "min":
        return old if old <= value else value
    return old if old >= value else value


class TotalTracker(Tracker):
    """Sum, minimum or maximum of a numeric property over all time."""

    __slots__ = ("function", "prop")
    kind = "total"

    def __init__(
        self, key: tuple[Any, ...], event: str, where: Where, function: str, prop: str
    ) -> None:
        super().__init__(key, event, where)
        self.function = function
        self.prop = prop

    def initial(self) -> Any:
        return 0 if self.function == "sum" else None

    def update(
        self, values: Values, properties: Mapping[str, PropertyValue], at: int, now: int
    ) -> bool:
        value = properties.get(self.prop)
        if not is_number(value):
            return False
        assert isinstance(value, int | float)
        values[self.slot] = _combine(self.function, values[self.slot], value)
        return True


class BucketTracker(Tracker):
    """Sum, minimum or maximum of a property within a window, in buckets.

    The value is a tuple of ``(bucket_index, aggregate)`` pairs, oldest first;
    bucket ``i`` holds events of ``[i * bucket_ms, (i + 1) * bucket_ms)`` and
    leaves the window at ``(i + 1) * bucket_ms + within_ms``.
    """

    __slots__ = ("bucket_ms", "function", "prop", "within_ms")
    kind = "buckets"
    expires = True

    def __init__(
        self,
        key: tuple[Any, ...],
        event: str,
        where: Where,
        function: str,
        prop: str,
        within_ms: int,
    ) -> None:
        super().__init__(key, event, where)
        self.function = function
        self.prop = prop
        self.within_ms = within_ms
        self.bucket_ms = max(1, within_ms // BUCKETS_PER_WINDOW)

    def initial(self) -> tuple[tuple[int, float], ...]:
        return ()

    def update(
        self, values: Values, properties: Mapping[str, PropertyValue], at: int, now: int
    ) -> bool:
        value = properties.get(self.prop)
        if not is_number(value):
            return False
        assert isinstance(value, int | float)
        index = at // self.bucket_ms
        if self.leaves_at(index) <= now:
            return False
        buckets = dict(values[self.slot])
        buckets[index] = _combine(self.function, buckets.get(index), value)
        values[self.slot] = tuple(sorted(buckets.items()))
        self.prune(values, now)
        return True

    def leaves_at(self, index: int) -> int:
        """Return when bucket ``index`` leaves the window."""
        return (index + 1) * self.bucket_ms + self.within_ms

    def prune(self, values: Values, now: int) -> None:
        buckets: tuple[tuple[int, float], ...] = values[self.slot]
        if buckets and self.leaves_at(buckets[0][0]) <= now:
            values[self.slot] = tuple(
                pair for pair in buckets if self.leaves_at(pair[0]) > now
            )

    def aggregate(self, buckets: tuple[tuple[int, float], ...]) -> float | None:
        """Combine bucket values; None when there are none (sum: 0)."""
        result: float | None = None
        for _, value in buckets:
            result = _combine(self.function, result, value)
        if result is None and self.function == "sum":
            return 0
        return result
