"""The tracking plan: the events a company knows and the lifecycles they drive.

This module holds the typed, frozen form of a plan and the check of one
event against it. `consumer.plan_loader` turns a YAML file into a `Plan`
(every error names the file and line), `consumer.plan_lint` finds mistakes
that load but cannot be meant, and `consumer.engine` runs the rules. The
YAML syntax is described in ``plans/default.yaml``.

Every plan loaded in this process is remembered (the last few), so that
`consumer.engine.decode_state` can find the plan that wrote a state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from consumer.conditions import Condition, is_number
from consumer.events import EVENT_NAME, Event

PropertyType: TypeAlias = Literal["string", "number", "boolean"]
Enforcement: TypeAlias = Literal["report", "dead_letter"]

#: The word a rule's ``from`` uses for a contact that has no stage yet.
NO_STAGE = "none"

#: How many loaded plans `loaded_plans` remembers.
REMEMBERED_PLANS = 8


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """What the plan says about one property of an event."""

    name: str
    type: PropertyType | None = None
    required: bool = False


@dataclass(frozen=True)
class EventSpec:
    """One planned event and its declared properties.

    Properties the plan does not declare are allowed and left unchecked.
    """

    name: str
    properties: Mapping[str, PropertySpec] = field(default_factory=dict)
    description: str = ""
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One ``{...}`` of a custom data template.

    ``stage``, ``lifecycle``, ``stage_since`` (ISO-8601 UTC),
    ``stage_since_ms`` (epoch ms), ``count`` of an event ever, and ``sum``
    of a numeric property of an event ever.
    """

    kind: Literal["stage", "lifecycle", "stage_since", "stage_since_ms", "count", "sum"]
    event: str | None = None
    prop: str | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """A custom data value computed from the contact's state.

    A template that is one placeholder alone keeps the placeholder's type
    (a count stays a number); otherwise the parts are joined as text.
    """

    text: str
    parts: tuple[str | Placeholder, ...]


DataValue: TypeAlias = str | int | float | bool | Template


@dataclass(frozen=True)
class Rule:
    """Move to ``to_stage`` from any stage of ``sources`` when ``when`` holds.

    ``sources`` names stages of the same lifecycle; `None` in it stands for
    a contact with no stage yet. A forward rule comes from earlier stages, a
    regression rule (``regression``) from later ones.
    """

    rule_id: str
    to_stage: str
    sources: frozenset[str | None]
    when: Condition
    regression: bool = False
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Stage:
    """One stage: the rules that enter it and what it means in Crisp."""

    name: str
    rules: tuple[Rule, ...]
    segments: tuple[str, ...] = ()
    data: Mapping[str, DataValue] = field(default_factory=dict)
    line: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Lifecycle:
    """An ordered list of stages; a contact is in at most one of them."""

    name: str
    stages: tuple[Stage, ...]
    line: int = field(default=0, compare=False, repr=False)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Return the stage names in order."""
        return tuple(stage.name for stage in self.stages)

    def index(self, stage: str) -> int:
        """Return the position of a stage; `ValueError` if it is not here."""
        return self.stage_names.index(stage)


@dataclass(frozen=True)
class SyncSettings:
    """How the outbox spends the Crisp request budget.

    ``debounce_s``: quiet time after the last change before a contact is
    sent; ``max_delay_s``: longest a changing contact waits; segments in
    ``managed_segments`` are the only ones the service adds or removes.
    """

    debounce_s: float = 5.0
    max_delay_s: float = 60.0
    managed_segments: frozenset[str] = frozenset()
    create_profiles: bool = True


@dataclass(frozen=True)
class EventVerdict:
    """What the plan says about one event.

    ``accepted`` is False only under ``dead_letter`` enforcement; under
    ``report`` a problem is still named for the caller to count and log.
    ``reason`` is a short tag: ``unknown_event``, ``bad_name``,
    ``near_miss``, ``bad_property`` or ``missing_property``.
    """

    accepted: bool
    problem: str | None = None
    reason: str | None = None


_PLANNED = EventVerdict(accepted=True)


@dataclass(frozen=True)
class Plan:
    """A loaded tracking plan."""

    source: str
    events: Mapping[str, EventSpec]
    enforcement: Enforcement
    lifecycles: tuple[Lifecycle, ...]
    sync: SyncSettings
    description: str = ""
    _near: Mapping[str, str] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        near = {normalize_name(name): name for name in self.events}
        object.__setattr__(self, "_near", near)

    def lifecycle(self, name: str) -> Lifecycle:
        """Return a lifecycle by name; `KeyError` if the plan has none."""
        for lifecycle in self.lifecycles:
            if lifecycle.name == name:
                return lifecycle
        raise KeyError(name)

    def rules(self) -> list[tuple[Lifecycle, Stage, Rule]]:
        """Return every rule with its lifecycle and stage, in plan order."""
        return [
            (lifecycle, stage, rule)
            for lifecycle in self.lifecycles
            for stage in lifecycle.stages
            for rule in stage.rules
        ]


_SEPARATORS = re.compile(r"[^a-z0-9]+")


def normalize_name(name: str) -> str:
    """Fold case and drop separators: ``order.completed`` -> ``ordercompleted``."""
    return _SEPARATORS.sub("", name.lower())


def check_event(plan: Plan, event: Event) -> EventVerdict:
    """Say whether the plan accepts the event, and what is wrong with it."""
    spec = plan.events.get(event.name)
    if spec is None:
        problem, reason = _name_problem(plan, event.name)
    else:
        if not spec.properties:
            return _PLANNED
        found = _property_problem(spec, event)
        if found is None:
            return _PLANNED
        problem, reason = found
    return EventVerdict(
        accepted=plan.enforcement == "report", problem=problem, reason=reason
    )


def _name_problem(plan: Plan, name: str) -> tuple[str, str]:
    planned = plan._near.get(normalize_name(name))
    if planned is not None:
        return f"{name!r} is not planned; did you mean {planned!r}?", "near_miss"
    if EVENT_NAME.match(name) is None:
        return (
            f"{name!r} does not follow the Category:Name convention "
            "(two PascalCase words joined by a colon)",
            "bad_name",
        )
    return f"{name!r} is not in the tracking plan", "unknown_event"


def _property_problem(spec: EventSpec, event: Event) -> tuple[str, str] | None:
    for prop in spec.properties.values():
        value = event.properties.get(prop.name)
        if value is None:
            if prop.required:
                return (
                    f"{event.name} needs property {prop.name!r}",
                    "missing_property",
                )
            continue
        if prop.type is not None and not _has_type(value, prop.type):
            return (
                f"{event.name} property {prop.name!r} should be a {prop.type}, "
                f"got {value!r}",
                "bad_property",
            )
    return None


def _has_type(value: object, expected: PropertyType) -> bool:
    if expected == "number":
        return is_number(value)
    if expected == "boolean":
        return isinstance(value, bool)
    return isinstance(value, str)


def default_sources(
    stage_names: tuple[str, ...], index: int, *, regression: bool
) -> frozenset[str | None]:
    """Return where a rule into stage ``index`` comes from unless it says.

    Forward: no stage yet and every earlier stage. Regression: every later
    stage.
    """
    if regression:
        return frozenset(stage_names[index + 1 :])
    return frozenset((None, *stage_names[:index]))


_SIMPLE_FIELDS: Mapping[str, str] = {
    "stage": "stage",
    "lifecycle": "lifecycle",
    "stage_since": "stage_since",
    "stage_since_ms": "stage_since_ms",
}


def parse_template(text: str) -> Template:
    """Parse a custom data template; `ValueError` names what is wrong.

    Placeholders: ``{stage}``, ``{lifecycle}``, ``{stage_since}``,
    ``{stage_since_ms}``, ``{count:Event:Name}``, ``{sum:Event:Name:prop}``.
    ``{{`` and ``}}`` stand for literal braces.
    """
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if text.startswith("{{", position) or text.startswith("}}", position):
            literal.append(char)
            position += 2
            continue
        if char == "}":
            raise ValueError(f"template {text!r}: '}}' without '{{' (write '}}}}')")
        if char != "{":
            literal.append(char)
            position += 1
            continue
        end = text.find("}", position)
        if end < 0:
            raise ValueError(f"template {text!r}: '{{' is never closed")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_placeholder(text, text[position + 1 : end]))
        position = end + 1
    if literal:
        parts.append("".join(literal))
    return Template(text=text, parts=tuple(parts))


def _placeholder(text: str, inner: str) -> Placeholder:
    fields = inner.split(":")
    kind = fields[0]
    if kind in _SIMPLE_FIELDS and len(fields) == 1:
        return Placeholder(kind)  # type: ignore[arg-type]
    if kind == "count" and len(fields) == 3:
        return Placeholder("count", event=f"{fields[1]}:{fields[2]}")
    if kind == "sum" and len(fields) == 4:
        return Placeholder("sum", event=f"{fields[1]}:{fields[2]}", prop=fields[3])
    raise ValueError(
        f"template {text!r}: unknown placeholder {{{inner}}} (use {{stage}}, "
        "{lifecycle}, {stage_since}, {stage_since_ms}, {count:Category:Name} "
        "or {sum:Category:Name:property})"
    )


_loaded: list[Plan] = []


def load_plan(path: str | Path) -> Plan:
    """Load and validate a plan file.

    Raise `consumer.errors.PlanError` with ``file:line: what is wrong``.
    """
    from consumer.plan_loader import parse_plan

    plan = parse_plan(Path(path))
    remember_plan(plan)
    return plan


def remember_plan(plan: Plan) -> None:
    """Keep a plan among the few that `loaded_plans` returns."""
    if any(known is plan for known in _loaded):
        return
    _loaded.append(plan)
    del _loaded[:-REMEMBERED_PLANS]


def loaded_plans() -> tuple[Plan, ...]:
    """Return the plans this process loaded most recently, newest last."""
    return tuple(_loaded)
