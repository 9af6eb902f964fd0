"""Compiled conditions: each node reads trackers and says when it may flip.

``value(state, now)`` evaluates the condition at ``now``. ``wake(state, now,
want)`` is asked only when the value differs from ``want`` and returns the
earliest time after ``now`` at which the value may become ``want`` without
any new event (None: never). It may be early, never late: the engine looks
again at that time, so a time-based transition fires at its exact due time.
Every leaf is monotone in time between events, which keeps these bounds
simple: a windowed count only falls, inactivity and time in stage only
become true.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from consumer.conditions import Threshold
from consumer.engine_trackers import BucketTracker

if TYPE_CHECKING:
    from consumer.engine_state import ContactState


Check = Callable[[Any], bool]

# partial(le, v)(x) is v <= x: the comparisons run in C.
_OPERATORS = {
    "gte": operator.le,
    "gt": operator.lt,
    "lte": operator.ge,
    "lt": operator.gt,
    "eq": operator.eq,
}


def threshold_check(thresholds: tuple[Threshold, ...]) -> Check:
    """Return a fast predicate: does a number pass every threshold?"""
    checks = [partial(_OPERATORS[t.op], t.value) for t in thresholds]
    if len(checks) == 1:
        return checks[0]
    return lambda actual: all(check(actual) for check in checks)


class Node:
    """A compiled condition.

    ``rises`` and ``falls``: whether the value may turn true (false) by the
    mere passing of time, with no event and no move.
    """

    __slots__ = ("events", "falls", "rises")

    def __init__(self, events: frozenset[str], rises: bool, falls: bool) -> None:
        self.events = events
        self.rises = rises
        self.falls = falls

    def value(self, state: ContactState, now: int) -> bool:
        """Evaluate the condition at ``now``."""
        raise NotImplementedError

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        """Return the earliest time after ``now`` the value may become ``want``."""
        return None


class EverCount(Node):
    """A count (or performed) over all time."""

    __slots__ = ("check", "slot")

    def __init__(
        self, event: str, slot: int, thresholds: tuple[Threshold, ...]
    ) -> None:
        super().__init__(frozenset({event}), rises=False, falls=False)
        self.slot = slot
        self.check = threshold_check(thresholds)

    def value(self, state: ContactState, now: int) -> bool:
        return self.check(state.values[self.slot])


class WindowCount(Node):
    """A count (or performed) within a window."""

    __slots__ = ("check", "slot", "within_ms")

    def __init__(
        self, event: str, slot: int, thresholds: tuple[Threshold, ...], within_ms: int
    ) -> None:
        # Without events the count can only fall as events leave the window.
        ops = {threshold.op for threshold in thresholds}
        super().__init__(
            frozenset({event}),
            rises=bool(ops & {"lte", "lt", "eq"}),
            falls=bool(ops & {"gte", "gt", "eq"}),
        )
        self.slot = slot
        self.check = threshold_check(thresholds)
        self.within_ms = within_ms

    def _inside(self, state: ContactState, now: int) -> tuple[int, ...]:
        times: tuple[int, ...] = state.values[self.slot]
        oldest = now - self.within_ms
        start = 0
        while start < len(times) and times[start] <= oldest:
            start += 1
        return times[start:]

    def value(self, state: ContactState, now: int) -> bool:
        times: tuple[int, ...] = state.values[self.slot]
        if not times or times[0] > now - self.within_ms:
            return self.check(len(times))
        return self.check(len(self._inside(state, now)))

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        if not (self.rises if want else self.falls):
            return None
        inside = self._inside(state, now)
        for dropped, at in enumerate(inside, start=1):
            if self.check(len(inside) - dropped) is want:
                return at + self.within_ms
        return None


class Inactive(Node):
    """No matching event within the window; guarded by the contact's age."""

    __slots__ = ("guard", "slot", "within_ms")

    def __init__(self, event: str, slot: int, within_ms: int, guard: bool) -> None:
        super().__init__(frozenset({event}), rises=True, falls=False)
        self.slot = slot
        self.within_ms = within_ms
        self.guard = guard

    def value(self, state: ContactState, now: int) -> bool:
        last = state.values[self.slot]
        if last is not None and now - last < self.within_ms:
            return False
        first = state.first_ms
        return not self.guard or (first is not None and now - first >= self.within_ms)

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        if not want or state.first_ms is None:
            return None
        last = state.values[self.slot]
        due = now + 1
        if last is not None:
            due = max(due, last + self.within_ms)
        if self.guard:
            due = max(due, state.first_ms + self.within_ms)
        return due


class Total(Node):
    """A sum, minimum or maximum over all time."""

    __slots__ = ("check", "slot")

    def __init__(
        self, event: str, slot: int, thresholds: tuple[Threshold, ...]
    ) -> None:
        super().__init__(frozenset({event}), rises=False, falls=False)
        self.slot = slot
        self.check = threshold_check(thresholds)

    def value(self, state: ContactState, now: int) -> bool:
        total = state.values[self.slot]
        return total is not None and self.check(total)


class WindowTotal(Node):
    """A sum, minimum or maximum within a window, from buckets."""

    __slots__ = ("check", "tracker")

    def __init__(
        self, tracker: BucketTracker, thresholds: tuple[Threshold, ...]
    ) -> None:
        # Values of either sign may leave the window: assume either way.
        super().__init__(frozenset({tracker.event}), rises=True, falls=True)
        self.tracker = tracker
        self.check = threshold_check(thresholds)

    def _passes(self, buckets: tuple[tuple[int, float], ...]) -> bool:
        total = self.tracker.aggregate(buckets)
        return total is not None and bool(self.check(total))

    def _inside(self, state: ContactState, now: int) -> tuple[tuple[int, float], ...]:
        buckets: tuple[tuple[int, float], ...] = state.values[self.tracker.slot]
        leaves_at = self.tracker.leaves_at
        return tuple(pair for pair in buckets if leaves_at(pair[0]) > now)

    def value(self, state: ContactState, now: int) -> bool:
        return self._passes(self._inside(state, now))

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        inside = self._inside(state, now)
        for dropped in range(1, len(inside) + 1):
            if self._passes(inside[dropped:]) is want:
                return self.tracker.leaves_at(inside[dropped - 1][0])
        return None


class InStageFor(Node):
    """In a stage (or beyond) for at least a duration."""

    __slots__ = ("for_ms", "lifecycle", "or_beyond", "since_slot", "stage")

    def __init__(
        self, lifecycle: int, stage: int, for_ms: int, or_beyond: bool, since_slot: int
    ) -> None:
        super().__init__(frozenset(), rises=for_ms > 0, falls=False)
        self.lifecycle = lifecycle
        self.stage = stage
        self.for_ms = for_ms
        self.or_beyond = or_beyond
        self.since_slot = since_slot

    def _since(self, state: ContactState) -> int | None:
        if self.or_beyond:
            since: int | None = state.since[self.lifecycle][self.since_slot]
            return since
        if state.stage[self.lifecycle] == self.stage:
            return state.entered[self.lifecycle]
        return None

    def value(self, state: ContactState, now: int) -> bool:
        if self.or_beyond:
            since = state.since[self.lifecycle][self.since_slot]
            return since is not None and now - since >= self.for_ms
        return (
            state.stage[self.lifecycle] == self.stage
            and now - state.entered[self.lifecycle] >= self.for_ms
        )

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        since = self._since(state)
        if not want or since is None:
            return None
        return since + self.for_ms


class Reached(Node):
    """The current stage is this one or later."""

    __slots__ = ("lifecycle", "stage")

    def __init__(self, lifecycle: int, stage: int) -> None:
        super().__init__(frozenset(), rises=False, falls=False)
        self.lifecycle = lifecycle
        self.stage = stage

    def value(self, state: ContactState, now: int) -> bool:
        return bool(state.stage[self.lifecycle] >= self.stage)


class All(Node):
    """Every child holds."""

    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]) -> None:
        super().__init__(
            frozenset().union(*(child.events for child in children)),
            rises=any(child.rises for child in children),
            falls=any(child.falls for child in children),
        )
        self.children = children

    def value(self, state: ContactState, now: int) -> bool:
        # A loop, not all(): no generator per call on the hot path.
        for child in self.children:  # noqa: SIM110
            if not child.value(state, now):
                return False
        return True

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        if not (self.rises if want else self.falls):
            return None
        if want:
            # Every false child must turn true first: the latest of them.
            latest = now + 1
            for child in self.children:
                if not child.value(state, now):
                    due = child.wake(state, now, True)
                    if due is None:
                        return None
                    latest = max(latest, due)
            return latest
        return _earliest(child.wake(state, now, False) for child in self.children)


class Any_(Node):
    """At least one child holds."""

    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]) -> None:
        super().__init__(
            frozenset().union(*(child.events for child in children)),
            rises=any(child.rises for child in children),
            falls=any(child.falls for child in children),
        )
        self.children = children

    def value(self, state: ContactState, now: int) -> bool:
        for child in self.children:  # noqa: SIM110
            if child.value(state, now):
                return True
        return False

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        if not (self.rises if want else self.falls):
            return None
        if want:
            return _earliest(child.wake(state, now, True) for child in self.children)
        latest = now + 1
        for child in self.children:
            if child.value(state, now):
                due = child.wake(state, now, False)
                if due is None:
                    return None
                latest = max(latest, due)
        return latest


class Not_(Node):
    """The child does not hold."""

    __slots__ = ("child",)

    def __init__(self, child: Node) -> None:
        super().__init__(child.events, rises=child.falls, falls=child.rises)
        self.child = child

    def value(self, state: ContactState, now: int) -> bool:
        return not self.child.value(state, now)

    def wake(self, state: ContactState, now: int, want: bool) -> int | None:
        return self.child.wake(state, now, not want)


def _earliest(times: Iterable[int | None]) -> int | None:
    found = [due for due in times if due is not None]
    return min(found) if found else None
