"""Find what loads in a tracking plan but is probably a mistake.

Errors make ``plan check`` fail: rules or templates that use events the plan
does not declare, stages no rule can reach, names that collide when case is
ignored, predicates that cannot match the declared property type, and Crisp
data keys that two lifecycles both set. Warnings do not: inactivity without
the age guard, rules that can never fire from their sources, properties the
event does not declare, segments that are not managed or not safe names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from consumer import conditions as c
from consumer.plan import Lifecycle, Placeholder, Plan, Rule, Template, normalize_name

Severity = Literal["error", "warning"]

_SAFE_SEGMENT = re.compile(r"^[a-z0-9_:-]+$")
_ORDERING = {"gt", "gte", "lt", "lte"}


@dataclass(frozen=True)
class Finding:
    """One lint finding, located in the plan file."""

    severity: Severity
    line: int
    message: str

    def render(self, source: str) -> str:
        """Return ``file:line: severity: message``."""
        return f"{source}:{self.line}: {self.severity}: {self.message}"


def lint_plan(plan: Plan) -> list[Finding]:
    """Return every finding, sorted by line."""
    found = [
        *_unknown_events(plan),
        *_properties(plan),
        *_guards(plan),
        *_reachability(plan),
        *_case_duplicates(plan),
        *_crisp(plan),
    ]
    return sorted(found, key=lambda finding: (finding.line, finding.message))


def _event_conditions(
    plan: Plan,
) -> Iterator[tuple[Rule, c.Performed | c.Count | c.Aggregate | c.NotPerformed]]:
    for _, _, rule in plan.rules():
        for node in c.walk(rule.when):
            if isinstance(node, c.EventCondition):
                yield rule, node


def _unknown_events(plan: Plan) -> Iterator[Finding]:
    for rule, node in _event_conditions(plan):
        if node.event not in plan.events:
            yield Finding(
                "error",
                node.line or rule.line,
                f"rule {rule.rule_id!r} uses {node.event!r}, "
                f"which is not in the plan's events{_hint(plan, node.event)}",
            )
    for lifecycle in plan.lifecycles:
        for stage in lifecycle.stages:
            for key, value in stage.data.items():
                for part in _placeholders(value):
                    if part.event is not None and part.event not in plan.events:
                        yield Finding(
                            "error",
                            stage.line,
                            f"Crisp data {key!r} of stage {stage.name!r} counts "
                            f"{part.event!r}, which is not in the plan's events"
                            f"{_hint(plan, part.event)}",
                        )


def _hint(plan: Plan, name: str) -> str:
    planned = plan._near.get(normalize_name(name))
    return f" (did you mean {planned!r}?)" if planned else ""


def _placeholders(value: object) -> Iterable[Placeholder]:
    if isinstance(value, Template):
        return [part for part in value.parts if isinstance(part, Placeholder)]
    return []


def _properties(plan: Plan) -> Iterator[Finding]:
    for rule, node in _event_conditions(plan):
        spec = plan.events.get(node.event)
        if spec is None or not spec.properties:
            continue
        used = [(test.prop, test.op, test.line) for test in node.where]
        if isinstance(node, c.Aggregate):
            used.append((node.prop, "number", node.line))
        for prop, op, line in used:
            declared = spec.properties.get(prop)
            where = line or node.line or rule.line
            if declared is None:
                yield Finding(
                    "warning",
                    where,
                    f"rule {rule.rule_id!r} reads property {prop!r}, which "
                    f"{node.event} does not declare",
                )
            elif declared.type not in (None, "number") and op in {*_ORDERING, "number"}:
                yield Finding(
                    "error",
                    where,
                    f"rule {rule.rule_id!r} compares {node.event} property "
                    f"{prop!r} as a number, but it is a {declared.type}",
                )
            elif declared.type not in (None, "string") and op == "matches":
                yield Finding(
                    "error",
                    where,
                    f"rule {rule.rule_id!r} matches {node.event} property {prop!r} "
                    f"as text, but it is a {declared.type}",
                )


def _guards(plan: Plan) -> Iterator[Finding]:
    for rule, node in _event_conditions(plan):
        if isinstance(node, c.NotPerformed) and not node.guard:
            yield Finding(
                "warning",
                node.line or rule.line,
                f"rule {rule.rule_id!r}: inactivity without the guard also matches "
                f"contacts younger than {c.format_duration(node.within_ms)}",
            )


def _allowed_sources(lifecycle: Lifecycle, rule: Rule) -> set[int]:
    """Return the source positions (-1: no stage) from which ``rule`` can hold.

    Only stage requirements that must hold (not under ``any`` or ``not``)
    narrow the sources.
    """
    names = lifecycle.stage_names
    sources = {-1 if s is None else names.index(s) for s in rule.sources}
    for node in _required(rule.when):
        if not isinstance(node, c.InStage | c.Reached):
            continue
        if node.lifecycle != lifecycle.name:
            continue
        position = names.index(node.stage)
        if isinstance(node, c.InStage) and not node.or_beyond:
            sources &= {position}
        else:
            sources = {s for s in sources if s >= position}
    return sources


def _required(condition: c.Condition) -> Iterator[c.Condition]:
    yield condition
    if isinstance(condition, c.AllOf):
        for inner in condition.conditions:
            yield from _required(inner)


def _reachability(plan: Plan) -> Iterator[Finding]:
    for lifecycle in plan.lifecycles:
        allowed = {
            rule.rule_id: _allowed_sources(lifecycle, rule)
            for stage in lifecycle.stages
            for rule in stage.rules
        }
        for stage in lifecycle.stages:
            for rule in stage.rules:
                if not allowed[rule.rule_id]:
                    yield Finding(
                        "warning",
                        rule.line,
                        f"rule {rule.rule_id!r} can never hold from the stages it "
                        "starts from: its stage conditions need a later stage",
                    )
        reached = {-1}
        grew = True
        while grew:
            grew = False
            for position, stage in enumerate(lifecycle.stages):
                if position in reached:
                    continue
                if any(allowed[rule.rule_id] & reached for rule in stage.rules):
                    reached.add(position)
                    grew = True
        for position, stage in enumerate(lifecycle.stages):
            if position not in reached:
                why = "no rule enters it" if not stage.rules else "no rule can fire"
                yield Finding(
                    "error",
                    stage.line,
                    f"stage {stage.name!r} of {lifecycle.name} cannot be reached: "
                    f"{why}",
                )


def _case_duplicates(plan: Plan) -> Iterator[Finding]:
    groups: list[tuple[str, list[tuple[str, int]]]] = [
        ("event", [(name, spec.line) for name, spec in plan.events.items()]),
        ("lifecycle", [(lc.name, lc.line) for lc in plan.lifecycles]),
        ("rule id", [(rule.rule_id, rule.line) for _, _, rule in plan.rules()]),
    ]
    for lifecycle in plan.lifecycles:
        groups.append(
            ("stage", [(stage.name, stage.line) for stage in lifecycle.stages])
        )
    segments: dict[str, tuple[str, int]] = {}
    for lifecycle in plan.lifecycles:
        for stage in lifecycle.stages:
            for segment in stage.segments:
                segments.setdefault(segment, (segment, stage.line))
    groups.append(("segment", list(segments.values())))
    for what, names in groups:
        seen: dict[str, str] = {}
        for name, line in names:
            folded = normalize_name(name) if what == "event" else name.casefold()
            other = seen.get(folded)
            if other is not None and other != name:
                yield Finding(
                    "error",
                    line,
                    f"{what} {name!r} differs from {other!r} only by case or "
                    "separators",
                )
            seen.setdefault(folded, name)


def _crisp(plan: Plan) -> Iterator[Finding]:
    managed = plan.sync.managed_segments
    owners: dict[str, str] = {}
    for lifecycle in plan.lifecycles:
        keys: set[str] = set()
        for stage in lifecycle.stages:
            keys.update(stage.data)
            for segment in stage.segments:
                if segment not in managed:
                    yield Finding(
                        "warning",
                        stage.line,
                        f"segment {segment!r} of stage {stage.name!r} is not managed: "
                        "the service will add it but never remove it",
                    )
                if _SAFE_SEGMENT.match(segment) is None:
                    yield Finding(
                        "warning",
                        stage.line,
                        f"segment {segment!r}: Crisp is known to accept lower-case "
                        "letters, digits, '_', '-' and ':'",
                    )
        for key in sorted(keys):
            if key in owners:
                yield Finding(
                    "error",
                    lifecycle.line,
                    f"Crisp data key {key!r} is set by lifecycles {owners[key]!r} "
                    f"and {lifecycle.name!r}; one would overwrite the other",
                )
            owners.setdefault(key, lifecycle.name)
