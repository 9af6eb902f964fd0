"""``crisp-lifecycle produce``: feed a file of events or rows to the topic.

The file is JSON lines in the envelope's form, or CSV / whitespace columns
(optionally gzip-compressed) with a mapping file (`consumer.importer`). Each
event is checked against the Avro schema, the ``Category:Name`` convention and
the tracking plan (``--plan``, else ``LIFECYCLE_PLAN``); bad rows are reported
on standard error with their line numbers and not produced. Events that a plan
with ``enforcement: report`` accepts despite a problem (an unplanned name, a
property of the wrong type) are produced, since the consumer will process
them, and counted as warnings.

The whole file is read and sorted in memory by (event time, line) before
anything is sent, so every contact's events reach Kafka in event-time order.
That is fine for files of up to a few million rows, which is what this tool is
for; a bigger feed belongs in a streaming producer (`consumer.producer`).

The run ends with a summary: rows read, events produced, rows skipped by the
mapping (by reason) and bad rows. Exit status 0 means the run completed, even
if some rows were bad; 1 means it could not complete (unreadable file or
mapping, Kafka or registry unavailable). ``--dry-run`` prints the events as
JSON lines on standard output instead of producing them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from consumer.codec import EventCodec
from consumer.errors import ConfigError
from consumer.events import EVENT_NAME, Event, format_time_ms
from consumer.importer import FORMATS, Importer, load_mapping
from consumer.logs import kafka_logger
from consumer.producer import EventProducer
from consumer.settings import Settings

#: Checks one event against the plan: (accepted, problem or None).
PlanCheck = Callable[[Event], tuple[bool, str | None]]
#: Plan problems of produced events printed line by line; the rest counted.
MAX_WARNINGS_SHOWN = 20
#: the exit status when some rows were bad (the good ones were produced)
BAD_ROWS = 3


def register(subparsers: Any) -> None:
    """Add the ``produce`` command."""
    parser = subparsers.add_parser(
        "produce",
        help="produce the events of a JSON lines, CSV or whitespace file",
        description="Produce the events of a JSON lines, CSV or whitespace file.",
    )
    parser.add_argument("file", type=Path, help="events or rows; .gz is read too")
    parser.add_argument("--mapping", type=Path, help="YAML mapping of rows")
    parser.add_argument("--format", choices=FORMATS, help="default: from mapping")
    parser.add_argument("--plan", help="tracking plan (LIFECYCLE_PLAN)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap (LIFECYCLE_BOOTSTRAP)")
    parser.add_argument("--topic", help="events topic (LIFECYCLE_TOPIC)")
    parser.add_argument(
        "--schema-registry",
        help="registry URL (LIFECYCLE_SCHEMA_REGISTRY); empty: local schemas",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print JSON lines, produce nothing"
    )
    parser.add_argument(
        "--email-template",
        help="give every contact this email, e.g. '{contact_id}@demo.invalid' "
        "(for demos against the sandbox: data sets without emails)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read, check, sort and produce; return the exit status."""
    settings = Settings.from_env()
    if not args.file.is_file():
        if args.file.is_dir():
            what = "a directory"
        elif args.file.exists():
            what = "not a regular file (it is read twice: save it to a file)"
        else:
            what = "no such file"
        raise ConfigError(f"{args.file}: {what}")
    mapping = load_mapping(args.mapping) if args.mapping else None
    if args.email_template:
        if mapping is None:
            raise ConfigError("--email-template needs --mapping")
        mapping = dataclasses.replace(
            mapping, email_column=None, email_template=args.email_template
        )
    importer = Importer(args.file, mapping, args.format)
    plan_check = load_plan_check(args.plan or settings.plan, args.plan is not None)
    progress = Progress(sys.stderr)
    codec = EventCodec(None)
    bad = 0
    warnings = 0
    accepted: list[tuple[int, int, Event]] = []
    for line, item in _readable(importer, args.file):
        progress.show("read", importer.rows_read)
        problem: str | None
        warning: str | None
        if isinstance(item, str):
            problem, warning = item, None
        else:
            problem, warning = check(item, codec, plan_check)
        if problem is not None or warning is not None:
            progress.clear()
        if problem is not None:
            bad += 1
            print(f"{args.file}:{line}: {problem}", file=sys.stderr)
            continue
        if warning is not None:
            warnings += 1
            if warnings <= MAX_WARNINGS_SHOWN:
                print(f"{args.file}:{line}: warning: {warning}", file=sys.stderr)
        assert isinstance(item, Event)
        accepted.append((item.occurred_at_ms, line, item))
    accepted.sort(key=lambda entry: (entry[0], entry[1]))
    events = [event for _, _, event in accepted]
    if args.dry_run:
        for event in events:
            sys.stdout.write(json.dumps(envelope_json(event)) + "\n")
    else:
        produce(events, settings, args, progress)
    progress.clear()
    summary = [
        f"read {importer.rows_read} rows",
        f"{'would produce' if args.dry_run else 'produced'} {len(events)} events",
        f"skipped {sum(importer.skipped.values())}",
        f"bad {bad}",
    ]
    if warnings:
        summary.append(f"{warnings} produced with plan warnings")
    print("; ".join(summary), file=sys.stderr)
    for reason, count in sorted(importer.skipped.items()):
        print(f"  skipped {count}: {reason}", file=sys.stderr)
    # The good rows are out; the status still tells a script that some were not.
    return BAD_ROWS if bad else 0


def produce(
    events: list[Event],
    settings: Settings,
    args: argparse.Namespace,
    progress: Progress,
) -> None:
    """Send the sorted events, showing progress; raise if any is lost."""
    registry = args.schema_registry
    if registry is None:
        registry = settings.schema_registry
    # An empty --schema-registry chooses the local-schema mode explicitly.
    with EventProducer(
        args.bootstrap or settings.bootstrap,
        args.topic or settings.topic,
        registry or None,
        logger=kafka_logger(),
        **dict(settings.kafka_options),
    ) as producer:
        for done, event in enumerate(events, start=1):
            producer.emit(event)
            progress.show("produced", done, len(events))


def check(
    event: Event, codec: EventCodec, plan_check: PlanCheck | None
) -> tuple[str | None, str | None]:
    """Return why an event may not be produced, and a plan warning, or Nones.

    A plan with ``enforcement: report`` accepts an event it has a problem
    with: that event is produced, and the problem is a warning.
    """
    if not EVENT_NAME.match(event.name):
        return f"event name {event.name!r} is not Category:Name in PascalCase", None
    try:
        codec.encode(event)
    except ValueError as exc:
        return str(exc), None
    if plan_check is None:
        return None, None
    accepted, problem = plan_check(event)
    if not accepted:
        return f"refused by the plan: {problem}", None
    return None, problem


def load_plan_check(plan_path: str, explicit: bool) -> PlanCheck | None:
    """Return a check against the tracking plan, or None with a warning.

    The plan module is imported here, not at the top, so that producing works
    in a checkout without it. A missing default plan file is a warning; a
    plan named with ``--plan`` must exist.
    """
    try:
        plan_module = importlib.import_module("consumer.plan")
    except ModuleNotFoundError as exc:
        if exc.name != "consumer.plan":
            raise
        warn("consumer.plan is not available: events are not checked against a plan")
        return None
    load_plan = getattr(plan_module, "load_plan", None)
    check_event = getattr(plan_module, "check_event", None)
    if not callable(load_plan) or not callable(check_event):
        warn("consumer.plan has no load_plan/check_event: no plan check")
        return None
    path = Path(plan_path)
    if not path.is_file():
        if explicit:
            raise ConfigError(f"no such plan: {path}")
        warn(f"default plan {path} not found: events are not checked against a plan")
        return None
    plan = load_plan(path)

    def plan_check(event: Event) -> tuple[bool, str | None]:
        verdict = check_event(plan, event)
        if verdict.accepted:
            return True, verdict.problem
        return False, verdict.problem or verdict.reason or "not in the plan"

    return plan_check


def envelope_json(event: Event) -> dict[str, Any]:
    """Return the envelope's JSON form of an event (time as ISO-8601)."""
    return {
        "event_id": event.event_id,
        "contact_id": event.contact_id,
        "name": event.name,
        "occurred_at": format_time_ms(event.occurred_at_ms),
        "email": event.email,
        "properties": dict(event.properties),
    }


def warn(message: str) -> None:
    """Print a warning line on standard error."""
    print(f"warning: {message}", file=sys.stderr)


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    INTERVAL_S = 0.2

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._last = 0.0
        self._shown = False

    def show(self, label: str, done: int, total: int | None = None) -> None:
        """Redraw the line at most every `INTERVAL_S` seconds."""
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last < self.INTERVAL_S and done != total:
            return
        self._last = now
        text = f"{label} {done:,}"
        if total:
            text += f"/{total:,} ({100 * done // total}%)"
        self._stream.write(f"\r{text}\x1b[K")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line so that other output starts at column 0."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


def _readable(importer: Importer, path: Path) -> Iterator[tuple[int, Event | str]]:
    """Yield the importer's rows; a file that cannot be read is an error.

    Bytes that are not UTF-8, or a compressed file cut short, stop the run
    before anything is produced, naming the row after the last one read.
    """
    try:
        yield from importer.events()
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        near = importer.rows_read + 1
        reason = (
            "not UTF-8 text"
            if isinstance(exc, UnicodeDecodeError)
            else f"cannot be read ({exc})"
        )
        raise ConfigError(f"{path}: near row {near}: {reason}") from exc
