"""Read files of other shapes into events: JSON lines, CSV, whitespace columns.

JSON lines without a mapping are the envelope's JSON form, one object per
line: ``event_id`` (optional), ``contact_id``, ``name``, ``occurred_at``
(ISO-8601 text or epoch milliseconds), ``email`` (optional) and
``properties`` (optional object of null, boolean, number or string).

Everything else needs a mapping file (YAML) saying how a row becomes an
event; ``mappings/*.yaml`` are worked examples. Its keys::

    format: csv | whitespace | jsonl
    columns: [name, ...]        # whitespace: required; csv: the file has no header
    delimiter: ","              # csv only
    contact_id: {column: c, prefix: "shop-"}
    email: {column: c}  or  {template: "{contact_id}@example.org"}   # optional
    time: {column: c, format: "%Y%m%d" | epoch_ms | epoch_s | iso8601}
    event: {name: Order:Completed, first_only: false}
      or   {column: c, map: {value: Name:Done | {name, first_only, properties}},
            skip: [value, ...] | {value: why}, unmapped: error | skip}
    properties: {prop: type  |  {column: c, type: t}  |  {value: v, type: t}}

Types are string, number, integer and boolean; an empty cell leaves the
property out. Times without a zone are UTC. Emails are only ever taken from
what the mapping names; nothing is invented.

Each event gets a deterministic id, a hash of the source file's name (without
``.gz``) and the line number, so importing a file again yields the same ids
and the consumer drops the repeats. ``first_only`` keeps, per contact, only
the earliest such event by (time, line); those events are therefore held
back and yielded after the others, which costs memory per contact and first
only event, not per row. Rows that the mapping skips are counted by reason in
`Importer.skipped`, not yielded. Unknown or duplicate keys in a mapping are
`ConfigError` naming file and line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from consumer.errors import ConfigError
from consumer.events import EVENT_NAME, Event, PropertyValue, parse_time_ms

FORMATS = ("jsonl", "csv", "whitespace")
PROPERTY_TYPES = ("string", "number", "integer", "boolean")
TIME_KEYWORDS = ("epoch_ms", "epoch_s", "iso8601")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "whitespace",
}
_INT64 = 2**63
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_ENVELOPE_KEYS = frozenset(
    {"event_id", "contact_id", "name", "occurred_at", "email", "properties"}
)


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One property: from a column, or a constant."""

    name: str
    type: str
    column: str | None = None
    value: PropertyValue = None


@dataclass(frozen=True, slots=True)
class EventRule:
    """What one row becomes: an event name and its extra properties."""

    name: str
    first_only: bool = False
    properties: tuple[PropertySpec, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportMapping:
    """A validated mapping file; see the module docstring for its keys."""

    source: Path
    format: str
    columns: tuple[str, ...]
    delimiter: str
    contact_column: str
    contact_prefix: str
    email_column: str | None
    email_template: str | None
    time_column: str
    time_format: str
    event_rule: EventRule | None
    event_column: str | None
    event_map: Mapping[str, EventRule]
    skip: Mapping[str, str]
    skip_unmapped: bool
    properties: tuple[PropertySpec, ...]


class _Located(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key."""

    line = 0
    key_lines: dict[str, int]


class _MappingLoader(yaml.SafeLoader):
    """A safe loader whose mappings are `_Located` and refuse duplicates."""


class _KeyError(Exception):
    """A key that the loader refuses, with its line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _construct_located(loader: _MappingLoader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    located = _Located()
    located.line = node.start_mark.line + 1
    located.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise _KeyError(line, f"keys must be text, not {key!r}")
        if key in located:
            raise _KeyError(line, f"duplicate key {key!r}")
        located[key] = loader.construct_object(value_node, deep=True)
        located.key_lines[key] = line
    return located


_MappingLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_located,
)


def load_mapping(path: Path) -> ImportMapping:
    """Read and check a mapping file; raise `ConfigError` naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read mapping {path}: {exc}") from exc
    try:
        document = yaml.load(text, Loader=_MappingLoader)
    except _KeyError as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read") from None
    return _MappingParser(path).parse(document)


class _MappingParser:
    """Turn the YAML document of a mapping into an `ImportMapping`."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def fail(self, line: int, message: str) -> ConfigError:
        return ConfigError(f"{self._path}:{line}: {message}")

    def section(
        self, parent: _Located, key: str, allowed: set[str], required: set[str]
    ) -> _Located:
        value = parent.get(key)
        line = parent.key_lines.get(key, parent.line)
        if not isinstance(value, _Located):
            raise self.fail(line, f"{key} must be a mapping with {sorted(required)}")
        self.check_keys(value, allowed, required, key)
        return value

    def check_keys(
        self, node: _Located, allowed: set[str], required: set[str], where: str
    ) -> None:
        for key in node:
            if key not in allowed:
                raise self.fail(
                    node.key_lines[key],
                    f"unknown key {key!r} in {where}; known: {sorted(allowed)}",
                )
        for key in sorted(required - node.keys()):
            raise self.fail(node.line, f"{where} needs {key!r}")

    def text(self, node: _Located, key: str, default: str | None = None) -> str:
        value = node.get(key, default)
        if not isinstance(value, str) or not value:
            line = node.key_lines.get(key, node.line)
            raise self.fail(line, f"{key} must be non-empty text")
        return value

    def parse(self, document: object) -> ImportMapping:
        if not isinstance(document, _Located):
            raise ConfigError(f"{self._path}: a mapping file is a YAML mapping")
        allowed = {"format", "columns", "delimiter", "contact_id", "email"}
        allowed |= {"time", "event", "properties"}
        self.check_keys(
            document, allowed, {"format", "contact_id", "time", "event"}, "mapping"
        )
        file_format = self.text(document, "format")
        if file_format not in FORMATS:
            raise self.fail(
                document.key_lines["format"], f"format must be one of {FORMATS}"
            )
        columns = document.get("columns", [])
        if not isinstance(columns, list) or not all(
            isinstance(column, str) and column for column in columns
        ):
            raise self.fail(
                document.key_lines["columns"], "columns must be a list of names"
            )
        if file_format == "whitespace" and not columns:
            raise self.fail(document.line, "whitespace files need columns")
        if file_format == "jsonl" and columns:
            raise self.fail(
                document.key_lines["columns"], "columns do not apply to jsonl"
            )
        if "delimiter" in document and file_format != "csv":
            raise self.fail(
                document.key_lines["delimiter"], "delimiter applies to csv only"
            )
        delimiter = self.text(document, "delimiter", ",")
        contact = self.section(document, "contact_id", {"column", "prefix"}, {"column"})
        prefix = contact.get("prefix", "")
        if not isinstance(prefix, str):
            raise self.fail(contact.key_lines["prefix"], "prefix must be text")
        email_column = email_template = None
        if "email" in document:
            email = self.section(document, "email", {"column", "template"}, set())
            if len(email) != 1:
                raise self.fail(email.line, "email needs column or template")
            if "column" in email:
                email_column = self.text(email, "column")
            else:
                email_template = self.text(email, "template")
        time = self.section(document, "time", {"column", "format"}, {"column"})
        time_format = self.text(time, "format", "iso8601")
        event = self.section(
            document,
            "event",
            {"name", "first_only", "column", "map", "skip", "unmapped"},
            set(),
        )
        event_rule, event_column, event_map, skip, skip_unmapped = self.event(event)
        properties = self.properties(document.get("properties"), document)
        return ImportMapping(
            source=self._path,
            format=file_format,
            columns=tuple(columns),
            delimiter=delimiter,
            contact_column=self.text(contact, "column"),
            contact_prefix=prefix,
            email_column=email_column,
            email_template=email_template,
            time_column=self.text(time, "column"),
            time_format=time_format,
            event_rule=event_rule,
            event_column=event_column,
            event_map=event_map,
            skip=skip,
            skip_unmapped=skip_unmapped,
            properties=properties,
        )

    def event(
        self, event: _Located
    ) -> tuple[
        EventRule | None, str | None, dict[str, EventRule], dict[str, str], bool
    ]:
        if ("name" in event) == ("column" in event):
            raise self.fail(event.line, "event needs either name or column")
        if "name" in event:
            extra = event.keys() - {"name", "first_only"}
            if extra:
                key = sorted(extra)[0]
                raise self.fail(event.key_lines[key], f"{key} needs event.column")
            rule = EventRule(
                self.event_name(event, "name"), self.flag(event, "first_only")
            )
            return rule, None, {}, {}, False
        if "first_only" in event:
            raise self.fail(
                event.key_lines["first_only"], "with column, set first_only per value"
            )
        table = event.get("map")
        if not isinstance(table, _Located) or not table:
            line = event.key_lines.get("map", event.line)
            raise self.fail(line, "event.map must map column values to names")
        event_map: dict[str, EventRule] = {}
        for value, target in table.items():
            line = table.key_lines[value]
            if isinstance(target, str):
                event_map[value] = EventRule(self.event_name(table, value))
                continue
            if not isinstance(target, _Located):
                raise self.fail(line, f"map value of {value!r} must be a name")
            self.check_keys(
                target, {"name", "first_only", "properties"}, {"name"}, value
            )
            event_map[value] = EventRule(
                self.event_name(target, "name"),
                self.flag(target, "first_only"),
                self.properties(target.get("properties"), target),
            )
        skip = self.skip(event)
        both = sorted(skip.keys() & event_map.keys())
        if both:
            raise self.fail(event.line, f"values both mapped and skipped: {both}")
        unmapped = event.get("unmapped", "error")
        if unmapped not in ("error", "skip"):
            raise self.fail(
                event.key_lines["unmapped"], "unmapped must be error or skip"
            )
        column = self.text(event, "column")
        return None, column, event_map, skip, unmapped == "skip"

    def skip(self, event: _Located) -> dict[str, str]:
        raw = event.get("skip", [])
        line = event.key_lines.get("skip", event.line)
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return {item: "skipped by the mapping" for item in raw}
        if isinstance(raw, dict) and all(
            isinstance(why, str) and why for why in raw.values()
        ):
            return dict(raw)
        raise self.fail(line, "skip must list values, or map values to reasons")

    def event_name(self, node: _Located, key: str) -> str:
        name = node.get(key)
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            raise self.fail(
                node.key_lines.get(key, node.line),
                f"event name {name!r} is not Category:Name in PascalCase",
            )
        return name

    def flag(self, node: _Located, key: str) -> bool:
        value = node.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(node.key_lines[key], f"{key} must be true or false")
        return value

    def properties(self, raw: object, parent: _Located) -> tuple[PropertySpec, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, _Located):
            line = parent.key_lines.get("properties", parent.line)
            raise self.fail(line, "properties must map names to types")
        specs = []
        for name, spec in raw.items():
            line = raw.key_lines[name]
            column: str | None
            value: object
            if isinstance(spec, str):
                spec_type, column, value = spec, name, None
            elif isinstance(spec, _Located):
                self.check_keys(spec, {"column", "value", "type"}, {"type"}, name)
                if ("column" in spec) == ("value" in spec):
                    raise self.fail(line, f"{name} needs either column or value")
                spec_type = spec["type"]
                column = self.text(spec, "column") if "column" in spec else None
                value = spec.get("value")
            else:
                raise self.fail(line, f"property {name} needs a type")
            if spec_type not in PROPERTY_TYPES:
                raise self.fail(line, f"{name}: type must be one of {PROPERTY_TYPES}")
            if column is None:
                try:
                    value = convert_property(value, spec_type)
                except ValueError as exc:
                    raise self.fail(line, f"{name}: {exc}") from exc
            specs.append(PropertySpec(name, spec_type, column, value))
        return tuple(specs)


class Importer:
    """Read one file into ``(line_number, Event | error message)`` pairs.

    ``rows_read`` counts data rows (blank lines and a header excluded) and
    ``skipped`` counts rows left out on purpose, by reason; both are complete
    once `events` is exhausted.
    """

    def __init__(
        self,
        path: Path,
        mapping: ImportMapping | None = None,
        file_format: str | None = None,
    ) -> None:
        self.path = path
        self.mapping = mapping
        if file_format is None:
            file_format = mapping.format if mapping else guess_format(path)
        self.format = file_format
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}, not {self.format}")
        if mapping is None and self.format != "jsonl":
            raise ConfigError(f"{path}: {self.format} files need a mapping file")
        name = path.name.removesuffix(".gz")
        self._id_seed = name
        self.rows_read = 0
        self.skipped: Counter[str] = Counter()

    def events(self) -> Iterator[tuple[int, Event | str]]:
        """Yield every row's event or the reason it is bad, by line number."""
        held: dict[tuple[str, str], tuple[int, int, Event]] = {}
        with open_text(self.path) as stream:
            for line, row in self._rows(stream):
                self.rows_read += 1
                if isinstance(row, str):
                    yield line, row
                    continue
                try:
                    built = self._build(line, row)
                except ValueError as exc:
                    yield line, str(exc)
                    continue
                if built is None:
                    continue
                event, first_only = built
                if not first_only:
                    yield line, event
                    continue
                key = (event.contact_id, event.name)
                earlier = held.get(key)
                if earlier is not None:
                    self.skipped[f"{event.name}: not the first (first_only)"] += 1
                    if earlier[:2] < (event.occurred_at_ms, line):
                        continue
                held[key] = (event.occurred_at_ms, line, event)
        for _, line, event in sorted(held.values(), key=lambda item: item[1]):
            yield line, event

    def _rows(self, stream: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
        if self.format == "jsonl":
            yield from _json_rows(stream)
        elif self.format == "csv":
            assert self.mapping is not None
            yield from _csv_rows(stream, self.mapping)
        else:
            assert self.mapping is not None
            yield from _whitespace_rows(stream, self.mapping.columns)

    def _build(self, line: int, row: dict[str, Any]) -> tuple[Event, bool] | None:
        """Return the row's event and its first_only flag, None if skipped."""
        mapping = self.mapping
        if mapping is None:
            return envelope_from_json(row, self._event_id(line)), False
        rule = mapping.event_rule
        if rule is None:
            assert mapping.event_column is not None
            value = _cell(row, mapping.event_column)
            if value in mapping.skip:
                self.skipped[f"{value}: {mapping.skip[value]}"] += 1
                return None
            rule = mapping.event_map.get(value)
            if rule is None:
                if mapping.skip_unmapped:
                    self.skipped[f"{value}: not in the mapping"] += 1
                    return None
                raise ValueError(
                    f"{mapping.event_column} value {value!r} is neither mapped "
                    "nor skipped"
                )
        contact = _cell(row, mapping.contact_column)
        if not contact:
            raise ValueError(f"contact id column {mapping.contact_column} is empty")
        contact_id = mapping.contact_prefix + contact
        occurred_at_ms = parse_time(
            _cell(row, mapping.time_column), mapping.time_format
        )
        properties: dict[str, PropertyValue] = {}
        for spec in (*mapping.properties, *rule.properties):
            if spec.column is None:
                properties[spec.name] = spec.value
                continue
            cell = _cell(row, spec.column)
            if cell == "":
                continue
            try:
                properties[spec.name] = convert_property(cell, spec.type)
            except ValueError as exc:
                raise ValueError(f"column {spec.column}: {exc}") from None
        email = None
        if mapping.email_column is not None:
            email = _cell(row, mapping.email_column) or None
        elif mapping.email_template is not None:
            email = _fill(mapping.email_template, row, contact_id)
        event = Event(
            event_id=self._event_id(line),
            contact_id=contact_id,
            name=rule.name,
            occurred_at_ms=occurred_at_ms,
            email=email,
            properties=properties,
        )
        return event, rule.first_only

    def _event_id(self, line: int) -> str:
        seed = f"{self._id_seed}:{line}".encode()
        return hashlib.sha256(seed).hexdigest()[:32]


def guess_format(path: Path) -> str:
    """Return the format that a file's extension suggests (``.gz`` ignored)."""
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    file_format = _EXTENSIONS.get(suffix)
    if file_format is None:
        raise ConfigError(f"{path}: cannot tell the format; pass --format")
    return file_format


def open_text(path: Path) -> IO[str]:
    """Open a UTF-8 text file, gzip-compressed or not (by its first bytes)."""
    try:
        with path.open("rb") as probe:
            compressed = probe.read(2) == b"\x1f\x8b"
        if compressed:
            return gzip.open(path, "rt", encoding="utf-8", newline="")
        return path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def parse_time(text: str, time_format: str) -> int:
    """Return epoch milliseconds of a cell; zone-less times are UTC."""
    if not text:
        raise ValueError("time is empty")
    try:
        if time_format == "epoch_ms":
            return int(text)
        if time_format == "epoch_s":
            return round(float(text) * 1000)
        if time_format == "iso8601":
            return parse_time_ms(text)
        moment = datetime.strptime(text, time_format)
    except ValueError:
        raise ValueError(f"time {text!r} does not match {time_format}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def convert_property(value: object, property_type: str) -> PropertyValue:
    """Convert a cell or JSON value to a property type; `ValueError` if not."""
    if value is None:
        return None
    if property_type == "string":
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, bool):
        if property_type == "boolean":
            return value
        raise ValueError(f"{value!r} is not {property_type}")
    if property_type == "boolean":
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"{value!r} is not a boolean")
    if property_type == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if not -_INT64 <= number < _INT64:
            raise ValueError(f"{value!r} does not fit 64 bits")
        return number
    try:
        real = float(value) if isinstance(value, int | float) else float(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(real):
        raise ValueError(f"{value!r} is not a finite number")
    return real


def envelope_from_json(data: Mapping[str, Any], default_event_id: str) -> Event:
    """Build an event from the envelope's JSON form; `ValueError` if bad."""
    unknown = sorted(data.keys() - _ENVELOPE_KEYS)
    if unknown:
        raise ValueError(f"unknown envelope keys {unknown}")
    for key in ("contact_id", "name", "occurred_at"):
        if key not in data:
            raise ValueError(f"{key} is missing")
    properties = data.get("properties") or {}
    if not isinstance(properties, dict):
        raise ValueError("properties must be an object")
    for key, value in properties.items():
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ValueError(f"property {key} is not null, boolean, number or text")
    texts = {
        key: data.get(key, default_event_id if key == "event_id" else None)
        for key in ("event_id", "contact_id", "name", "email")
    }
    for key, value in texts.items():
        if not (value is None and key == "email") and not isinstance(value, str):
            raise ValueError(f"{key} must be text")
    return Event(
        event_id=texts["event_id"],
        contact_id=texts["contact_id"],
        name=texts["name"],
        occurred_at_ms=parse_time_ms(data["occurred_at"]),
        email=texts["email"],
        properties=properties,
    )


def _json_rows(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as exc:
            yield line, f"not JSON: {exc}"
            continue
        yield line, row if isinstance(row, dict) else "not a JSON object"


def _csv_rows(
    stream: IO[str], mapping: ImportMapping
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(stream, delimiter=mapping.delimiter)
    header = list(mapping.columns)
    if not header:
        header = next(reader, [])
    for cells in reader:
        if not cells:
            continue
        if len(cells) != len(header):
            yield (
                reader.line_num,
                (f"{len(cells)} cells where the header has {len(header)}"),
            )
            continue
        yield reader.line_num, dict(zip(header, cells, strict=True))


def _whitespace_rows(
    stream: IO[str], columns: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, text in enumerate(stream, start=1):
        cells = text.split()
        if not cells:
            continue
        if len(cells) != len(columns):
            yield line, f"{len(cells)} columns where the mapping names {len(columns)}"
            continue
        yield line, dict(zip(columns, cells, strict=True))


def _cell(row: Mapping[str, Any], column: str) -> str:
    if column not in row:
        raise ValueError(f"column {column} is missing")
    value = row[column]
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value)


def _fill(template: str, row: Mapping[str, Any], contact_id: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return contact_id if name == "contact_id" else _cell(row, name)

    return _PLACEHOLDER.sub(replace, template)
