"""The conditions a transition rule may ask of a contact's history.

Plain frozen values: the plan loader builds them from YAML, the engine
compiles them into trackers, the linter walks them. Nothing here looks at a
contact's state except `PropertyTest.holds`, which tests one event.

Times are epoch milliseconds and durations are milliseconds. A window of
``W`` milliseconds evaluated at ``now`` holds the events with
``now - W < occurred_at <= now``: an event leaves the window exactly ``W``
after it happened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from consumer.events import PropertyValue

PROPERTY_OPS = ("eq", "ne", "in", "gt", "gte", "lt", "lte", "exists", "matches")
THRESHOLD_OPS = ("gte", "gt", "lte", "lt", "eq")

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
#: Longer would carry due times past what a contact's state can hold.
MAX_DURATION_MS = 36_500 * 86_400_000
_UNIT_MS = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}


def parse_duration_ms(text: str) -> int:
    """Parse ``30m``, ``12h``, ``14d`` (also ``ms``, ``s``, ``w``) to ms.

    Raise `ValueError` for anything else, including zero.
    """
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(
            f"not a duration: {text!r} (use a whole number and one of "
            "ms, s, m, h, d, w, e.g. 14d)"
        )
    value = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if value <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    if value > MAX_DURATION_MS:
        raise ValueError(f"a duration must be at most 36500d (100 years): {text!r}")
    return value


def format_duration(duration_ms: int) -> str:
    """Return the largest whole unit that writes ``duration_ms`` exactly."""
    for unit in ("w", "d", "h", "m", "s"):
        if duration_ms % _UNIT_MS[unit] == 0:
            return f"{duration_ms // _UNIT_MS[unit]}{unit}"
    return f"{duration_ms}ms"


def is_number(value: object) -> bool:
    """Tell whether a property value is a number (booleans are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def same_value(left: object, right: object) -> bool:
    """Compare two property values; ``1 == 1.0`` but ``True != 1``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return left == right


@dataclass(frozen=True, slots=True)
class PropertyTest:
    """One predicate on one property of an event.

    Every operator but ``exists: false`` needs the property present and not
    null, so ``ne`` does not match an event that lacks the property. The
    ordering operators compare numbers only; ``matches`` searches a string
    with a regular expression.
    """

    prop: str
    op: str
    value: PropertyValue | tuple[PropertyValue, ...]
    line: int = field(default=0, compare=False, repr=False)

    def holds(self, properties: Mapping[str, PropertyValue]) -> bool:
        """Tell whether the event's properties satisfy this predicate."""
        actual = properties.get(self.prop)
        if self.op == "exists":
            return (actual is not None) is self.value
        if actual is None:
            return False
        expected = self.value
        if self.op == "eq":
            return same_value(actual, expected)
        if self.op == "ne":
            return not same_value(actual, expected)
        if self.op == "in":
            assert isinstance(expected, tuple)
            return any(same_value(actual, item) for item in expected)
        if self.op == "matches":
            return (
                isinstance(actual, str) and re.search(str(expected), actual) is not None
            )
        if not is_number(actual) or not is_number(expected):
            return False
        assert isinstance(actual, int | float) and isinstance(expected, int | float)
        return compare(self.op, actual, expected)


def compare(op: str, actual: float, expected: float) -> bool:
    """Apply a threshold operator (``gte``, ``gt``, ``lte``, ``lt``, ``eq``)."""
    if op == "gte":
        return actual >= expected
    if op == "gt":
        return actual > expected
    if op == "lte":
        return actual <= expected
    if op == "lt":
        return actual < expected
    return actual == expected


@dataclass(frozen=True, slots=True)
class Threshold:
    """A comparison of a count or an aggregate with a fixed number."""

    op: str
    value: float

    def holds(self, actual: float) -> bool:
        """Tell whether ``actual`` passes the comparison."""
        return compare(self.op, actual, self.value)


Where: TypeAlias = tuple[PropertyTest, ...]


@dataclass(frozen=True, slots=True)
class Performed:
    """The event happened (matching ``where``), ever or within a window."""

    event: str
    where: Where = ()
    within_ms: int | None = None
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Count:
    """The number of matching events passes every threshold."""

    event: str
    thresholds: tuple[Threshold, ...]
    where: Where = ()
    within_ms: int | None = None
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The sum, minimum or maximum of a numeric property passes every threshold.

    Events that lack the property or carry a non-number are left out; with no
    value at all a minimum or maximum does not pass, a sum is 0.
    """

    function: Literal["sum", "min", "max"]
    event: str
    prop: str
    thresholds: tuple[Threshold, ...]
    where: Where = ()
    within_ms: int | None = None
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class NotPerformed:
    """No matching event within the window: inactivity.

    With ``guard`` (the default) a contact first seen less than the window
    ago does not match, so a brand-new contact is not taken for inactive.
    """

    event: str
    within_ms: int
    where: Where = ()
    guard: bool = True
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class InStage:
    """The contact has been in ``stage`` (or beyond) for at least ``for_ms``."""

    lifecycle: str
    stage: str
    for_ms: int = 0
    or_beyond: bool = False
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Reached:
    """The contact's current stage is ``stage`` or a later one."""

    lifecycle: str
    stage: str
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AllOf:
    """Every condition holds."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one condition holds."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The condition does not hold."""

    condition: Condition


Condition: TypeAlias = (
    Performed
    | Count
    | Aggregate
    | NotPerformed
    | InStage
    | Reached
    | AllOf
    | AnyOf
    | Not
)

EventCondition = (Performed, Count, Aggregate, NotPerformed)


def walk(condition: Condition) -> Iterator[Condition]:
    """Yield the condition and every condition inside it, depth first."""
    yield condition
    if isinstance(condition, AllOf | AnyOf):
        for inner in condition.conditions:
            yield from walk(inner)
    elif isinstance(condition, Not):
        yield from walk(condition.condition)


def events_of(condition: Condition) -> frozenset[str]:
    """Return the event names the condition looks at."""
    return frozenset(
        node.event for node in walk(condition) if isinstance(node, EventCondition)
    )


def is_finite_number(value: object) -> bool:
    """Tell whether a value is a number that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)  # type: ignore[arg-type]
