"""Read a tracking plan from YAML into `consumer.plan.Plan`.

The file is composed into YAML nodes first, so every error can name the file
and line it comes from: ``plans/x.yaml:12: unknown key 'whenn' in a stage
(allowed: ...)``. Unknown keys and duplicate keys are errors. Conditions are
parsed by `consumer.plan_conditions`; what loads but is probably a mistake
(unknown events, unreachable stages) is left to `consumer.plan_lint`.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from consumer.conditions import Condition
from consumer.errors import PlanError
from consumer.events import EVENT_NAME
from consumer.plan import (
    NO_STAGE,
    DataValue,
    EventSpec,
    Lifecycle,
    Plan,
    PropertySpec,
    PropertyType,
    Rule,
    Stage,
    SyncSettings,
    default_sources,
    parse_template,
)
from consumer.plan_conditions import ConditionReader
from consumer.plan_yaml import Document

PLAN_VERSION = 1
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DATA_KEY = re.compile(r"^[a-z0-9_-]+$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SEGMENT_FIELDS = {"stage", "lifecycle"}


def parse_plan(path: Path) -> Plan:
    """Read and validate the plan file at ``path``."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{source}: cannot read the plan: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PlanError(f"{source}: the plan is not UTF-8 text: {exc}") from exc
    return parse_plan_text(text, source)


def parse_plan_text(text: str, source: str = "<plan>") -> Plan:
    """Validate plan YAML given as text; ``source`` names it in errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise PlanError(f"{source}:{line} not valid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise PlanError(f"{source}: not valid YAML: {exc}") from exc
    except RecursionError:
        raise PlanError(f"{source}: nested too deeply to read") from None
    if root is None:
        raise PlanError(f"{source}:1: the plan is empty")
    try:
        return _PlanReader(Document(source)).read(root)
    except RecursionError:
        raise PlanError(f"{source}: conditions nested too deeply") from None


class _PlanReader:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.rule_lines: dict[str, int] = {}

    def read(self, root: Node) -> Plan:
        doc = self.doc
        top = doc.mapping(
            root,
            "the plan",
            {"version", "description", "enforcement", "sync", "events", "lifecycles"},
            ("events", "lifecycles"),
        )
        if "version" in top and doc.scalar(top["version"], "version") != PLAN_VERSION:
            doc.fail(top["version"], f"this service reads plan version {PLAN_VERSION}")
        enforcement = "report"
        if "enforcement" in top:
            enforcement = doc.text(top["enforcement"], "enforcement")
            if enforcement not in ("report", "dead_letter"):
                doc.fail(
                    top["enforcement"],
                    f"enforcement must be report or dead_letter, not {enforcement!r}",
                )
        events = self.events(top["events"])
        lifecycles = self.lifecycles(top["lifecycles"])
        sync = self.sync(top.get("sync"), lifecycles)
        description = ""
        if "description" in top:
            description = doc.text(top["description"], "description")
        return Plan(
            source=doc.source,
            events=events,
            enforcement="report" if enforcement == "report" else "dead_letter",
            lifecycles=lifecycles,
            sync=sync,
            description=description,
        )

    def events(self, node: Node) -> dict[str, EventSpec]:
        doc = self.doc
        if not isinstance(node, MappingNode):
            doc.fail(node, "events must be a mapping of event names")
        specs: dict[str, EventSpec] = {}
        for key_node, value_node in node.value:
            name = doc.text(key_node, "an event name")
            if name in specs:
                doc.fail(key_node, f"event {name!r} is declared twice")
            if EVENT_NAME.match(name) is None:
                doc.fail(
                    key_node,
                    f"event {name!r} does not follow the Category:Name convention "
                    "(two PascalCase words joined by one colon, e.g. Order:Completed)",
                )
            specs[name] = self.event(name, key_node, value_node)
        return specs

    def event(self, name: str, key_node: Node, node: Node) -> EventSpec:
        doc = self.doc
        line = key_node.start_mark.line + 1
        if isinstance(node, ScalarNode) and doc.scalar(node, name) is None:
            return EventSpec(name=name, line=line)
        items = doc.mapping(node, f"event {name}", {"description", "properties"})
        description = ""
        if "description" in items:
            description = doc.text(items["description"], "description")
        properties: dict[str, PropertySpec] = {}
        if "properties" in items:
            props = doc.mapping(items["properties"], f"properties of {name}")
            for prop, prop_node in props.items():
                properties[prop] = self.property(name, prop, prop_node)
        return EventSpec(
            name=name, properties=properties, description=description, line=line
        )

    def property(self, event: str, prop: str, node: Node) -> PropertySpec:
        doc = self.doc
        what = f"property {prop!r} of {event}"
        if isinstance(node, ScalarNode):
            return PropertySpec(prop, self.property_type(node, what))
        items = doc.mapping(node, what, {"type", "required", "description"})
        kind = self.property_type(items["type"], what) if "type" in items else None
        required = "required" in items and doc.boolean(items["required"], "required")
        return PropertySpec(prop, kind, required)

    def property_type(self, node: Node, what: str) -> PropertyType:
        kind = self.doc.text(node, f"the type of {what}")
        if kind == "string":
            return "string"
        if kind == "number":
            return "number"
        if kind == "boolean":
            return "boolean"
        self.doc.fail(
            node, f"the type of {what} must be string, number or boolean, not {kind!r}"
        )

    def lifecycles(self, node: Node) -> tuple[Lifecycle, ...]:
        doc = self.doc
        items = doc.mapping(node, "lifecycles")
        if not items:
            doc.fail(node, "the plan needs at least one lifecycle")
        stage_names: dict[str, tuple[str, ...]] = {}
        for name, lifecycle_node in items.items():
            if _NAME.match(name) is None:
                doc.fail(lifecycle_node, _bad_name("lifecycle", name))
            stage_names[name] = self.stage_names(name, lifecycle_node)
        conditions = ConditionReader(doc, stage_names)
        return tuple(
            self.lifecycle(name, lifecycle_node, stage_names[name], conditions)
            for name, lifecycle_node in items.items()
        )

    def stage_names(self, lifecycle: str, node: Node) -> tuple[str, ...]:
        doc = self.doc
        items = doc.mapping(
            node,
            f"lifecycle {lifecycle}",
            {"description", "crisp", "stages"},
            ("stages",),
        )
        stage_nodes = doc.sequence(items["stages"], f"stages of {lifecycle}")
        if not stage_nodes:
            doc.fail(items["stages"], f"lifecycle {lifecycle} needs at least one stage")
        names: list[str] = []
        for stage_node in stage_nodes:
            fields = doc.mapping(stage_node, "a stage", required=("name",))
            name = doc.text(fields["name"], "a stage name")
            if _NAME.match(name) is None or name == NO_STAGE:
                doc.fail(fields["name"], _bad_name("stage", name))
            if name in names:
                doc.fail(fields["name"], f"stage {name!r} appears twice in {lifecycle}")
            names.append(name)
        return tuple(names)

    def lifecycle(
        self,
        name: str,
        node: Node,
        names: tuple[str, ...],
        conditions: ConditionReader,
    ) -> Lifecycle:
        doc = self.doc
        items = doc.mapping(node, f"lifecycle {name}")
        shared_segments: list[tuple[str, Node]] = []
        shared_data: dict[str, tuple[DataValue, Node]] = {}
        if "crisp" in items:
            shared_segments, shared_data = self.crisp(items["crisp"], name)
        stages = []
        for index, stage_node in enumerate(doc.sequence(items["stages"], "stages")):
            stages.append(
                self.stage(
                    name,
                    names,
                    index,
                    stage_node,
                    conditions,
                    shared_segments,
                    shared_data,
                )
            )
        return Lifecycle(name=name, stages=tuple(stages), line=_line(node))

    def stage(
        self,
        lifecycle: str,
        names: tuple[str, ...],
        index: int,
        node: Node,
        conditions: ConditionReader,
        shared_segments: list[tuple[str, Node]],
        shared_data: dict[str, tuple[DataValue, Node]],
    ) -> Stage:
        doc = self.doc
        name = names[index]
        items = doc.mapping(
            node, f"stage {name}", {"name", "description", "when", "rules", "crisp"}
        )
        rules: list[Rule] = []
        if "when" in items:
            when = conditions.read(items["when"], lifecycle)
            sources = default_sources(names, index, regression=False)
            rules.append(self.rule(name, name, sources, when, False, items["when"]))
        if "rules" in items:
            for rule_node in doc.sequence(items["rules"], f"rules of stage {name}"):
                rules.append(
                    self.explicit_rule(lifecycle, names, index, rule_node, conditions)
                )
        segments = [text for text, _ in shared_segments]
        data = dict(shared_data)
        if "crisp" in items:
            own_segments, own_data = self.crisp(items["crisp"], lifecycle)
            segments.extend(text for text, _ in own_segments)
            data.update(own_data)
        expanded = []
        for text in segments:
            segment = text.replace("{stage}", name).replace("{lifecycle}", lifecycle)
            if segment not in expanded:
                expanded.append(segment)
        return Stage(
            name=name,
            rules=tuple(rules),
            segments=tuple(expanded),
            data={key: value for key, (value, _) in data.items()},
            line=_line(node),
        )

    def explicit_rule(
        self,
        lifecycle: str,
        names: tuple[str, ...],
        index: int,
        node: Node,
        conditions: ConditionReader,
    ) -> Rule:
        doc = self.doc
        items = doc.mapping(
            node,
            "a rule",
            {"id", "when", "from", "regression", "description"},
            ("id", "when"),
        )
        rule_id = doc.text(items["id"], "a rule id")
        regression = "regression" in items and doc.boolean(
            items["regression"], "regression"
        )
        if "from" in items:
            sources = self.sources(items["from"], names, index, regression)
        else:
            sources = default_sources(names, index, regression=regression)
            if not sources:
                doc.fail(
                    node, f"regression rule {rule_id!r} has no later stage to leave"
                )
        when = conditions.read(items["when"], lifecycle)
        return self.rule(rule_id, names[index], sources, when, regression, node)

    def sources(
        self, node: Node, names: tuple[str, ...], index: int, regression: bool
    ) -> frozenset[str | None]:
        doc = self.doc
        nodes = [node] if isinstance(node, ScalarNode) else doc.sequence(node, "from")
        found: set[str | None] = set()
        for item in nodes:
            name = doc.text(item, "a stage in from")
            if name == NO_STAGE:
                if regression:
                    doc.fail(item, "a regression rule cannot start from no stage")
                found.add(None)
                continue
            if name not in names:
                doc.fail(item, f"from names {name!r}, which is not a stage here")
            position = names.index(name)
            if regression and position <= index:
                doc.fail(
                    item,
                    f"a regression rule must come from a later stage; "
                    f"{name!r} is not after {names[index]!r}",
                )
            if not regression and position >= index:
                doc.fail(
                    item,
                    f"a forward rule must come from an earlier stage; {name!r} is "
                    f"not before {names[index]!r} (mark it regression: true?)",
                )
            found.add(name)
        if not found:
            doc.fail(node, "from must name at least one stage")
        return frozenset(found)

    def rule(
        self,
        rule_id: str,
        to_stage: str,
        sources: frozenset[str | None],
        when: Condition,
        regression: bool,
        node: Node,
    ) -> Rule:
        if rule_id in self.rule_lines:
            self.doc.fail(
                node,
                f"rule id {rule_id!r} is already used on line "
                f"{self.rule_lines[rule_id]}; give this rule its own id",
            )
        self.rule_lines[rule_id] = _line(node)
        return Rule(
            rule_id=rule_id,
            to_stage=to_stage,
            sources=sources,
            when=when,
            regression=regression,
            line=_line(node),
        )

    def crisp(
        self, node: Node, lifecycle: str
    ) -> tuple[list[tuple[str, Node]], dict[str, tuple[DataValue, Node]]]:
        doc = self.doc
        items = doc.mapping(node, "crisp", {"segments", "data"})
        segments: list[tuple[str, Node]] = []
        if "segments" in items:
            for item in doc.sequence(items["segments"], "segments"):
                text = doc.text(item, "a segment")
                for match in _PLACEHOLDER.finditer(text):
                    if match.group(1) not in _SEGMENT_FIELDS:
                        doc.fail(
                            item,
                            f"a segment may only use {{stage}} and {{lifecycle}}, "
                            f"not {{{match.group(1)}}}",
                        )
                segments.append((text, item))
        data: dict[str, tuple[DataValue, Node]] = {}
        if "data" in items:
            for key, value_node in doc.mapping(items["data"], "data").items():
                if _DATA_KEY.match(key) is None:
                    doc.fail(
                        value_node,
                        f"Crisp data key {key!r} must be lower-case letters, "
                        "digits, '_' and '-'",
                    )
                data[key] = (self.data_value(value_node), value_node)
        return segments, data

    def data_value(self, node: Node) -> DataValue:
        doc = self.doc
        value = doc.scalar(node, "a data value")
        if value is None:
            doc.fail(node, "Crisp data values cannot be null")
        if not isinstance(value, str):
            assert isinstance(value, int | float | bool)
            return value
        try:
            return parse_template(value)
        except ValueError as exc:
            doc.fail(node, str(exc))

    def sync(
        self, node: Node | None, lifecycles: tuple[Lifecycle, ...]
    ) -> SyncSettings:
        every_segment = frozenset(
            segment
            for lifecycle in lifecycles
            for stage in lifecycle.stages
            for segment in stage.segments
        )
        if node is None:
            return SyncSettings(managed_segments=every_segment)
        doc = self.doc
        items = doc.mapping(
            node,
            "sync",
            {"debounce", "max_delay", "managed_segments", "create_profiles"},
        )
        settings = SyncSettings(managed_segments=every_segment)
        debounce_s = settings.debounce_s
        max_delay_s = settings.max_delay_s
        if "debounce" in items:
            debounce_s = doc.seconds(items["debounce"], "debounce")
        if "max_delay" in items:
            max_delay_s = doc.seconds(items["max_delay"], "max_delay")
        if max_delay_s < debounce_s:
            doc.fail(node, "max_delay must not be shorter than debounce")
        managed = every_segment
        if "managed_segments" in items:
            nodes = doc.sequence(items["managed_segments"], "managed_segments")
            managed = frozenset(doc.text(item, "a segment") for item in nodes)
        create = settings.create_profiles
        if "create_profiles" in items:
            create = doc.boolean(items["create_profiles"], "create_profiles")
        return SyncSettings(
            debounce_s=debounce_s,
            max_delay_s=max_delay_s,
            managed_segments=managed,
            create_profiles=create,
        )


def _bad_name(what: str, name: str) -> str:
    return (
        f"{what} name {name!r} must be lower_snake_case "
        f"(letters, digits, '_'){' and not none' if what == 'stage' else ''}"
    )


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1
