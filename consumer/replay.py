"""Rebuild every stage from the topic into a fresh namespace, then switch.

A replay reads the events topic from the start (or from a time) with a
consumer group of its own, into a namespace beside the live one, through
the same `consumer.service.Service` as a live run, so the result is what
live processing would have produced. The live consumers keep running on the
old namespace meanwhile. Then:

1. a second, short pass catches up with what arrived during the first;
2. every rebuilt contact takes over what Crisp was last sent (and its
   people id) from the live namespace, and is queued once if its desired
   state differs: intermediate states cost nothing, and managed segments
   that a changed plan no longer gives are removed. A live contact the
   topic no longer explains (its events are older than ``--from`` or than
   the topic's retention) is in no stage now: it is carried over without a
   state and queued once to take its managed segments off Crisp;
3. the active-namespace pointer switches in one ``SET``. Running consumers
   follow it within a second, continuing each partition from the offset the
   rebuilt state reached, without a restart (a consumer still on an older
   plan stops with an error naming the plan: restart it with the new one).

A replay records itself in Redis; run the same command again after a crash
and it resumes from where its group and namespace stopped. ``--dry-run``
builds the new state, prints how stages would change, and removes it.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka.admin import AdminClient

from consumer.engine import decode_state, desired_crisp
from consumer.errors import ConfigError
from consumer.events import format_time_ms, wall_clock_ms
from consumer.outbox import NOTHING, encode_desired
from consumer.plan import Plan
from consumer.service import Replaying, Service
from consumer.settings import Settings
from consumer.store import ContactRecord, Namespaces, Store, connect

log = structlog.get_logger("consumer.replay")

#: Contacts read per round trip while finishing a replay.
BATCH = 500


@dataclass
class StageChanges:
    """How stages differ between the live and the rebuilt namespace."""

    moves: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    samples: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    contacts: int = 0
    unchanged: int = 0
    #: live contacts with a stage that the rebuilt namespace does not know
    left: int = 0

    def add(self, lifecycle: str, before: str, after: str, contact_id: str) -> None:
        """Count one contact whose stage differs."""
        key = (lifecycle, before, after)
        self.moves[key] += 1
        sample = self.samples.setdefault(key, [])
        if len(sample) < 5:
            sample.append(contact_id)

    def lines(self) -> Iterator[str]:
        """Describe the changes for a person."""
        yield (
            f"{self.contacts} contacts rebuilt, {self.unchanged} unchanged, "
            f"{self.contacts - self.unchanged} would change stage"
        )
        for (lifecycle, before, after), count in self.moves.most_common():
            sample = ", ".join(self.samples[(lifecycle, before, after)])
            yield f"  {lifecycle}: {before} -> {after}: {count} (e.g. {sample})"
        if self.left:
            yield (
                f"{self.left} live contacts have no events in the replayed "
                "range and leave their stages"
            )


def new_namespace(base: str) -> str:
    """Return a fresh namespace name beside ``base``."""
    return f"{base}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"


class Replay:
    """One replay of ``settings.topic`` into a new namespace."""

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        *,
        namespace: str | None = None,
        from_ms: int | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.client = connect(settings.redis_url)
        self.names = Namespaces(self.client, settings.namespace)
        self.live = self.names.active()
        recorded = self.names.replay_in_progress()
        self.namespace = (
            namespace or recorded.get("namespace") or new_namespace(settings.namespace)
        )
        if self.namespace == self.live:
            raise ConfigError(
                f"namespace {self.namespace!r} is the active one; replay into "
                "another (or omit --namespace)"
            )
        self.from_ms = from_ms
        self.clock_ms = clock_ms
        self.group = f"{settings.group}.replay.{self.namespace}"
        self.resumed = recorded.get("namespace") == self.namespace

    def build(self) -> bool:
        """Consume into the new namespace until caught up twice; False if stopped.

        The first pass runs to the high watermarks taken at its start; the
        second, short one to those taken after the first.
        """
        self.names.record_replay(
            {
                "namespace": self.namespace,
                "group": self.group,
                "plan": self.plan.source,
                "started_at": format_time_ms(self.clock_ms()),
            }
        )
        log.info(
            "replay_started",
            namespace=self.namespace,
            live=self.live,
            resumed=self.resumed,
            group=self.group,
        )
        settings = dataclasses.replace(self.settings, group=self.group, health_port=0)
        for _ in range(2):
            service = Service(
                settings,
                self.plan,
                replay=Replaying(self.namespace, self.from_ms),
            )
            service.run()
            if not service.caught_up:
                return False
        return True

    def compare(self) -> StageChanges:
        """Compare every rebuilt contact's stages with the live ones."""
        changes = StageChanges()
        live = Store(self.client, self.live)
        for rebuilt, current in self._pairs(live):
            changes.contacts += 1
            after = decode_state(rebuilt.state or b"", self.plan).stages
            before = (
                decode_state(current.state).stages if current.state is not None else {}
            )
            moved = False
            for lifecycle, stage in after.items():
                old = before.get(lifecycle)
                if old != stage:
                    moved = True
                    changes.add(lifecycle, str(old), str(stage), rebuilt.contact_id)
            changes.unchanged += not moved
        for current in self._live_only(live):
            if current.state is not None and any(
                decode_state(current.state).stages.values()
            ):
                changes.left += 1
        return changes

    def finish(self, *, drop_old: bool) -> int:
        """Carry Crisp bookkeeping over, queue what changed, switch; return queued."""
        live = Store(self.client, self.live)
        rebuilt_store = Store(self.client, self.namespace)
        dry_run = not self.settings.crisp_configured
        now_ms = self.clock_ms()
        queued = 0
        pipe = self.client.pipeline(transaction=False)
        for rebuilt, current in self._pairs(live):
            desired = encode_desired(
                desired_crisp(self.plan, decode_state(rebuilt.state or b"", self.plan))
            )
            carried: dict[Any, Any] = {}
            for field_name, value in (
                ("l", current.last_sent),
                ("L", current.last_sent_dry_run),
                ("i", current.people_id),
            ):
                if value is not None:
                    carried[field_name] = value
            if current.email and not rebuilt.email:
                carried["e"] = current.email
            sent = current.last_sent_dry_run if dry_run else current.last_sent
            key = rebuilt_store.contact_key(rebuilt.contact_id)
            if desired != (sent or NOTHING) and rebuilt.partition is not None:
                carried.update(d=desired, od=str(now_ms), of=str(now_ms))
                # Without an identity it waits on the contact, as live does.
                if rebuilt.email or current.email or current.people_id:
                    pipe.zadd(
                        rebuilt_store.outbox_key(
                            self.settings.topic, rebuilt.partition
                        ),
                        {rebuilt.contact_id: now_ms},
                    )
                    queued += 1
            if carried:
                pipe.hset(key, mapping=carried)
            if len(pipe) >= 2 * BATCH:
                pipe.execute()
        for current in self._live_only(live):
            sent = current.last_sent_dry_run if dry_run else current.last_sent
            if sent is None or sent == NOTHING or current.partition is None:
                continue
            retired = self._retired(current, now_ms)
            pipe.hset(rebuilt_store.contact_key(current.contact_id), mapping=retired)
            if current.email or current.people_id:
                pipe.zadd(
                    rebuilt_store.outbox_key(self.settings.topic, current.partition),
                    {current.contact_id: now_ms},
                )
                queued += 1
            if len(pipe) >= 2 * BATCH:
                pipe.execute()
        pipe.execute()
        old = self.names.switch(self.namespace)
        self.names.finish_replay()
        log.info("namespace_switched", old=old, new=self.namespace, queued=queued)
        if drop_old:
            dropped = self.names.drop(old)
            log.info("namespace_dropped", namespace=old, keys=dropped)
        self._delete_group()
        return queued

    @staticmethod
    def _retired(current: ContactRecord, now_ms: int) -> dict[Any, Any]:
        """Return the fields of a live-only contact in the new namespace: no
        state, its Crisp bookkeeping, and a pending update to nothing."""
        fields: dict[Any, Any] = {
            "r": 1,
            "p": current.partition,
            "d": NOTHING,
            "od": str(now_ms),
            "of": str(now_ms),
        }
        for field_name, value in (
            ("l", current.last_sent),
            ("L", current.last_sent_dry_run),
            ("i", current.people_id),
            ("e", current.email),
        ):
            if value is not None:
                fields[field_name] = value
        return fields

    def discard(self) -> None:
        """Remove the rebuilt namespace and the replay's group (dry run)."""
        self.names.drop(self.namespace)
        self.names.finish_replay()
        self._delete_group()

    def _pairs(self, live: Store) -> Iterator[tuple[ContactRecord, ContactRecord]]:
        rebuilt = Store(self.client, self.namespace)
        batch: list[ContactRecord] = []
        for record in rebuilt.scan_contacts():
            if record.state is None:
                continue
            batch.append(record)
            if len(batch) >= BATCH:
                yield from self._with_live(live, batch)
                batch = []
        yield from self._with_live(live, batch)

    def _live_only(self, live: Store) -> Iterator[ContactRecord]:
        """Yield the live contacts that the rebuilt namespace does not hold."""
        rebuilt = Store(self.client, self.namespace)
        batch: list[ContactRecord] = []
        for record in live.scan_contacts():
            batch.append(record)
            if len(batch) >= BATCH:
                yield from self._unknown(rebuilt, batch)
                batch = []
        yield from self._unknown(rebuilt, batch)

    @staticmethod
    def _unknown(rebuilt: Store, batch: list[ContactRecord]) -> Iterator[ContactRecord]:
        known = rebuilt.load_contacts(record.contact_id for record in batch)
        for record in batch:
            if known[record.contact_id].revision == 0:
                yield record

    @staticmethod
    def _with_live(
        live: Store, batch: list[ContactRecord]
    ) -> Iterator[tuple[ContactRecord, ContactRecord]]:
        current = live.load_contacts(record.contact_id for record in batch)
        for record in batch:
            yield record, current[record.contact_id]

    def _delete_group(self) -> None:
        admin = AdminClient(self.settings.kafka_config())
        for future in admin.delete_consumer_groups([self.group]).values():
            try:
                future.result(timeout=30)
            except Exception as exc:  # the group is only bookkeeping now
                log.warning(
                    "replay_group_not_deleted", group=self.group, error=str(exc)
                )
