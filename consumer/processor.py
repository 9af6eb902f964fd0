"""Apply a batch of one partition's events to contact state in Redis.

This is the step between decoding and committing: load the batch's contacts
in one round trip, run the engine over each contact's events in offset
order, and write the new states, the offsets they reached and their outbox
entries with the fenced write of `consumer.store`. A contact whose write
conflicts (a zombie or the relay wrote it meanwhile) is reloaded and its
events are applied again from the offset it now holds, so the result is the
same whoever wins.

The same class fires time-based transitions of contacts whose timers are
due; the caller decides the clock (see `consumer.service`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from consumer.engine import (
    ContactState,
    Transition,
    advance,
    apply_event,
    decode_state,
    desired_crisp,
    encode_state,
    new_state,
    next_due_ms,
)
from consumer.engine_compile import compiled
from consumer.errors import RedisUnavailable
from consumer.events import Event
from consumer.outbox import NOTHING, due_ms, encode_desired
from consumer.plan import Placeholder, Plan, Template
from consumer.store import ContactRecord, ContactWrite, Store

#: Receives transitions before the state that made them is written.
Announce = Callable[[list[Transition]], None]

#: How often a contact write may conflict before the batch is retried whole.
MAX_CONFLICT_ROUNDS = 20


@dataclass(frozen=True, slots=True)
class Offset:
    """An event and the offset it was read at."""

    offset: int
    event: Event


@dataclass(slots=True)
class BatchResult:
    """What one batch did, for the publisher and the metrics."""

    transitions: list[Transition] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0


@dataclass(slots=True)
class _Outcome:
    contact_id: str
    write: ContactWrite | None = None
    transitions: list[Transition] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0


class Processor:
    """Run the engine over batches of one topic and write the results.

    ``sync`` False (replay) computes and stores state but queues no Crisp
    update; ``dry_run`` compares desired states with what the dry-run relay
    recorded instead of what real Crisp was sent.
    """

    def __init__(
        self,
        plan: Plan,
        store: Store,
        topic: str,
        *,
        wall_clock_ms: Callable[[], int],
        sync: bool = True,
        dry_run: bool = False,
    ) -> None:
        self.plan = plan
        self.store = store
        self.topic = topic
        self.wall_clock_ms = wall_clock_ms
        self.sync = sync
        self.dry_run = dry_run
        self._stage_only_data = _data_follows_stages(plan)

    def process(
        self, partition: int, items: Sequence[Offset], announce: Announce
    ) -> BatchResult:
        """Apply one partition's events, in offset order, and write them.

        ``announce`` receives the transitions before their state is written;
        it must not return until they are durable elsewhere.
        """
        by_contact: dict[str, list[Offset]] = {}
        for item in items:
            by_contact.setdefault(item.event.contact_id, []).append(item)
        result = BatchResult()
        records = self.store.load_contacts(by_contact)
        for _ in range(MAX_CONFLICT_ROUNDS):
            outcomes = [
                self._apply(record, partition, by_contact[contact_id])
                for contact_id, record in records.items()
            ]
            announce([t for o in outcomes for t in o.transitions])
            writes = [o.write for o in outcomes if o.write is not None]
            conflicts = {
                w.contact_id for w in self.store.write_contacts(self.topic, writes)
            }
            for outcome in outcomes:
                if outcome.contact_id not in conflicts:
                    result.transitions.extend(outcome.transitions)
                    result.applied += outcome.applied
                    result.duplicates += outcome.duplicates
            if not conflicts:
                return result
            result.conflicts += len(conflicts)
            records = self.store.load_contacts(conflicts)
        raise RedisUnavailable(
            f"contacts of partition {partition} kept changing under the writer"
        )

    def _apply(
        self, record: ContactRecord, partition: int, items: Sequence[Offset]
    ) -> _Outcome:
        # Offsets order events only within one partition: a contact that
        # arrives from another one (partitions were added) starts afresh.
        applied = record.offset if record.partition in (partition, None) else -1
        fresh = [item for item in items if item.offset > applied]
        outcome = _Outcome(record.contact_id, duplicates=len(items) - len(fresh))
        if not fresh:
            return outcome
        before = state = self._state(record)
        email = None
        for item in fresh:
            step = apply_event(self.plan, state, item.event)
            state = step.state
            if step.duplicate:
                outcome.duplicates += 1
            else:
                outcome.applied += 1
                outcome.transitions.extend(step.transitions)
            if item.event.email and item.event.email != record.email:
                email = item.event.email
        outcome.write = self._write(
            record,
            partition,
            fresh[-1].offset,
            before,
            state,
            email,
            moved=bool(outcome.transitions),
        )
        return outcome

    def fire_timers(
        self, partition: int, now_ms: int, announce: Announce, limit: int = 500
    ) -> BatchResult:
        """Advance contacts whose timers are due at or before ``now_ms``."""
        result = BatchResult()
        key = self.store.timers_key(self.topic, partition)
        due = self.store.due_members(key, now_ms, limit)
        records = self.store.load_contacts(contact_id for contact_id, _ in due)
        for contact_id, score in due:
            if records[contact_id].revision == 0:
                self.store.remove_if_unchanged(key, contact_id, score)
                del records[contact_id]
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not records:
                return result
            outcomes = []
            for record in records.values():
                state = self._state(record)
                step = advance(self.plan, state, now_ms)
                outcome = _Outcome(
                    record.contact_id, transitions=list(step.transitions)
                )
                write = self._write(
                    record,
                    partition,
                    record.offset,
                    state,
                    step.state,
                    None,
                    moved=bool(step.transitions),
                )
                # The index holds this contact, whatever its state says (a
                # crash can leave an entry): a state with no timer left
                # removes it, or it would stay due for ever.
                outcome.write = replace(write, had_timer=True)
                outcomes.append(outcome)
            announce([t for o in outcomes for t in o.transitions])
            writes = [o.write for o in outcomes if o.write is not None]
            conflicts = {
                w.contact_id for w in self.store.write_contacts(self.topic, writes)
            }
            for outcome in outcomes:
                if outcome.contact_id not in conflicts:
                    result.transitions.extend(outcome.transitions)
            result.conflicts += len(conflicts)
            records = self.store.load_contacts(conflicts)
        raise RedisUnavailable(f"timers of partition {partition} kept conflicting")

    def _desired_follows_stages(self, state: ContactState) -> bool:
        """True when only a stage move can change the desired Crisp state.

        That holds when the plan's custom data names stages and their times
        but no counts or sums, and the state is laid out for this very plan
        (a state carried over from another plan may want a new look).
        """
        return self._stage_only_data and state.layout is compiled(self.plan)

    def _state(self, record: ContactRecord) -> ContactState:
        if record.state is None:
            return new_state(record.contact_id)
        return decode_state(record.state)

    def _write(
        self,
        record: ContactRecord,
        partition: int,
        offset: int,
        before: ContactState,
        after: ContactState,
        email: str | None,
        moved: bool,
    ) -> ContactWrite:
        pending = None
        pending_due = pending_first = 0
        if moved or not self._desired_follows_stages(before):
            desired: str | None = encode_desired(desired_crisp(self.plan, after))
        else:
            desired = None  # no move: the desired state is what it was
        if self.sync and desired is None and email and record.pending is not None:
            desired = record.pending  # send it now that an identity is known
        if self.sync and desired is not None:
            sent = record.last_sent_dry_run if self.dry_run else record.last_sent
            baseline = record.pending if record.pending is not None else sent
            # A contact in no stage that Crisp never heard of costs nothing.
            baseline = baseline if baseline is not None else NOTHING
            if desired != baseline or (email and record.pending is not None):
                pending_due, pending_first = due_ms(
                    self.wall_clock_ms(),
                    record.pending_first_ms,
                    self.plan.sync.debounce_s,
                    self.plan.sync.max_delay_s,
                )
                pending = desired
        return ContactWrite(
            contact_id=record.contact_id,
            expected_revision=record.revision,
            state=encode_state(after),
            partition=partition,
            offset=offset,
            email=email,
            pending=pending,
            pending_due_ms=pending_due,
            pending_first_ms=pending_first,
            next_due_ms=next_due_ms(self.plan, after),
            had_timer=record.revision > 0
            and next_due_ms(self.plan, before) is not None,
        )


def _data_follows_stages(plan: Plan) -> bool:
    """True when no custom data template of the plan uses counts or sums."""
    for lifecycle in plan.lifecycles:
        for stage in lifecycle.stages:
            for value in stage.data.values():
                parts = value.parts if isinstance(value, Template) else ()
                if any(
                    isinstance(part, Placeholder) and part.kind in {"count", "sum"}
                    for part in parts
                ):
                    return False
    return True
