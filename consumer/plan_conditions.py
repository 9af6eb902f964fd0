"""Read the conditions of a plan's rules from YAML nodes.

A condition is an event name alone (it was performed) or a mapping with
exactly one kind key and that kind's options::

    performed: Order:Completed        where, within
    count: Product:Viewed             gte/gt/lte/lt/eq, where, within
    sum: Order:Completed              of (property), gte/gt/lte/lt/eq,
                                      where, within (also min:, max:)
    not_performed: Order:Completed    within (required), where, guard
    in_stage: customer                for, or_beyond, lifecycle
    reached: customer                 lifecycle
    all: [...]   any: [...]   not: {...}

``where`` maps a property to a value (equality) or to predicates:
``{amount: {gt: 0}, plan: {in: [pro, team]}, coupon: {exists: true}}``.
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node, ScalarNode

from consumer.conditions import (
    PROPERTY_OPS,
    THRESHOLD_OPS,
    Aggregate,
    AllOf,
    AnyOf,
    Condition,
    Count,
    InStage,
    Not,
    NotPerformed,
    Performed,
    PropertyTest,
    Reached,
    Threshold,
    Where,
)
from consumer.events import PropertyValue
from consumer.plan_yaml import Document

_OPTIONS: dict[str, frozenset[str]] = {
    "performed": frozenset({"where", "within"}),
    "count": frozenset({"where", "within", *THRESHOLD_OPS}),
    "sum": frozenset({"of", "where", "within", *THRESHOLD_OPS}),
    "min": frozenset({"of", "where", "within", *THRESHOLD_OPS}),
    "max": frozenset({"of", "where", "within", *THRESHOLD_OPS}),
    "not_performed": frozenset({"within", "where", "guard"}),
    "in_stage": frozenset({"lifecycle", "for", "or_beyond"}),
    "reached": frozenset({"lifecycle"}),
    "all": frozenset(),
    "any": frozenset(),
    "not": frozenset(),
}


class ConditionReader:
    """Turn condition nodes into `consumer.conditions` values.

    ``stage_names`` maps every lifecycle to its stages, so that ``in_stage``
    and ``reached`` are checked against the whole plan.
    """

    def __init__(self, doc: Document, stage_names: dict[str, tuple[str, ...]]) -> None:
        self.doc = doc
        self.stage_names = stage_names

    def read(self, node: Node, lifecycle: str) -> Condition:
        """Return the condition of ``node``; stages default to ``lifecycle``."""
        doc = self.doc
        line = node.start_mark.line + 1
        if isinstance(node, ScalarNode):
            return Performed(event=doc.text(node, "a condition"), line=line)
        if not isinstance(node, MappingNode):
            doc.fail(node, "a condition is an event name or a mapping")
        items = doc.mapping(node, "a condition")
        kinds = [key for key in items if key in _OPTIONS]
        if len(kinds) != 1:
            doc.fail(
                node,
                "a condition needs exactly one of "
                f"{', '.join(_OPTIONS)}; found {', '.join(kinds) or 'none'}",
            )
        kind = kinds[0]
        for key in items:
            if key != kind and key not in _OPTIONS[kind]:
                allowed = ", ".join(sorted(_OPTIONS[kind])) or "nothing else"
                doc.fail(node, f"unknown key {key!r} in {kind} (allowed: {allowed})")
        value = items[kind]
        if kind in ("all", "any"):
            nodes = doc.sequence(value, kind)
            if not nodes:
                doc.fail(value, f"{kind} needs at least one condition")
            inner = tuple(self.read(item, lifecycle) for item in nodes)
            return AllOf(inner) if kind == "all" else AnyOf(inner)
        if kind == "not":
            return Not(self.read(value, lifecycle))
        if kind in ("in_stage", "reached"):
            return self.stage_condition(kind, items, lifecycle, line)
        return self.event_condition(kind, items, line)

    def event_condition(
        self, kind: str, items: dict[str, Node], line: int
    ) -> Condition:
        doc = self.doc
        event = doc.text(items[kind], f"the event of {kind}")
        where = self.where(items["where"]) if "where" in items else ()
        within = None
        if "within" in items:
            within = doc.duration_ms(items["within"], "within")
        if kind == "performed":
            return Performed(event, where, within, line=line)
        if kind == "not_performed":
            if within is None:
                doc.fail(items[kind], "not_performed needs within (e.g. 60d)")
            guard = "guard" not in items or doc.boolean(items["guard"], "guard")
            return NotPerformed(event, within, where, guard, line=line)
        thresholds = self.thresholds(kind, items)
        if kind == "count":
            return Count(event, thresholds, where, within, line=line)
        if "of" not in items:
            doc.fail(items[kind], f"{kind} needs of: the numeric property to add up")
        prop = doc.text(items["of"], "of")
        if kind == "sum":
            return Aggregate("sum", event, prop, thresholds, where, within, line=line)
        if kind == "min":
            return Aggregate("min", event, prop, thresholds, where, within, line=line)
        return Aggregate("max", event, prop, thresholds, where, within, line=line)

    def thresholds(self, kind: str, items: dict[str, Node]) -> tuple[Threshold, ...]:
        doc = self.doc
        found = []
        for op in THRESHOLD_OPS:
            if op not in items:
                continue
            value = doc.number(items[op], op)
            if kind == "count" and (not isinstance(value, int) or value < 0):
                doc.fail(
                    items[op], f"a count compares with a whole number, not {value}"
                )
            found.append(Threshold(op, value))
        if not found:
            doc.fail(
                items[kind], f"{kind} needs a comparison: {', '.join(THRESHOLD_OPS)}"
            )
        return tuple(found)

    def where(self, node: Node) -> Where:
        doc = self.doc
        tests: list[PropertyTest] = []
        for prop, value_node in doc.mapping(node, "where").items():
            line = value_node.start_mark.line + 1
            if isinstance(value_node, ScalarNode):
                tests.append(
                    PropertyTest(prop, "eq", self.plain(value_node, "eq"), line=line)
                )
                continue
            predicates = doc.mapping(
                value_node, f"the predicates on {prop!r}", set(PROPERTY_OPS)
            )
            if not predicates:
                doc.fail(value_node, f"no predicate on {prop!r}")
            for op, op_node in predicates.items():
                tests.append(
                    PropertyTest(prop, op, self.operand(op, op_node), line=line)
                )
        return tuple(tests)

    def operand(self, op: str, node: Node) -> PropertyValue | tuple[PropertyValue, ...]:
        doc = self.doc
        if op in ("eq", "ne"):
            return self.plain(node, op)
        if op == "in":
            items = doc.sequence(node, "in")
            if not items:
                doc.fail(node, "in needs at least one value")
            return tuple(self.plain(item, "a value of in") for item in items)
        if op == "exists":
            return doc.boolean(node, "exists")
        if op == "matches":
            pattern = doc.text(node, "matches")
            try:
                re.compile(pattern)
            except re.error as exc:
                doc.fail(node, f"matches: not a regular expression: {exc}")
            return pattern
        return doc.number(node, op)

    def plain(self, node: Node, what: str) -> PropertyValue:
        value = self.doc.scalar(node, what)
        if value is None:
            self.doc.fail(node, f"{what} needs a value (use exists: false for null)")
        assert isinstance(value, str | int | float | bool)
        return value

    def stage_condition(
        self, kind: str, items: dict[str, Node], lifecycle: str, line: int
    ) -> Condition:
        doc = self.doc
        if "lifecycle" in items:
            lifecycle = doc.text(items["lifecycle"], "lifecycle")
            if lifecycle not in self.stage_names:
                doc.fail(items["lifecycle"], f"there is no lifecycle {lifecycle!r}")
        stage = doc.text(items[kind], f"the stage of {kind}")
        if stage not in self.stage_names[lifecycle]:
            doc.fail(
                items[kind],
                f"{kind} names {stage!r}, which is not a stage of {lifecycle}",
            )
        if kind == "reached":
            return Reached(lifecycle, stage, line=line)
        for_ms = doc.duration_ms(items["for"], "for") if "for" in items else 0
        or_beyond = "or_beyond" in items and doc.boolean(
            items["or_beyond"], "or_beyond"
        )
        return InStage(lifecycle, stage, for_ms, or_beyond, line=line)
