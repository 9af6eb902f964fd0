"""The poll loop of ``crisp-lifecycle run``: Kafka in, Redis state out.

One `Service` per process. It follows DESIGN.md's data flow:

1. consume a batch (many messages per poll) from the partitions it owns;
2. decode each message and check it against the plan; anything that cannot
   be an event goes to the dead-letter topic with its reason and bytes;
3. apply each partition's events with `consumer.processor.Processor`, which
   announces transitions before it writes the contacts (fenced, atomic per
   contact) with their outbox entries;
4. store the next offset in Redis and in the consumer; librdkafka commits it.

A transient failure (Redis, registry or broker) pauses every partition and
retries the same batch with backoff, polling meanwhile so the process stays
in its group; nothing is skipped. Rebalances use cooperative-sticky
assignment: on assignment each partition starts at the offset Redis stored
when that is ahead of the committed one; on revocation its pending work is
dropped, never written.

The clock of time-based transitions: while a partition is behind, only its
events advance contacts (event time, as in a replay); once it has caught up
with its high watermark, due timers fire at wall-clock time less a grace
for late events (``LIFECYCLE_TIMER_GRACE_S``). So a live run and a replay of
the same events agree, as long as no event arrives later than that grace.

The Crisp relay (`consumer.relay`) runs on a thread of its own: the poll loop
never waits on Crisp. When the outbox of the owned partitions grows past a
depth or an age, the loop pauses its partitions instead of leaving the group.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer import health as metrics
from consumer.codec import EventCodec, TransitionCodec
from consumer.engine import Transition
from consumer.errors import (
    BadContactId,
    ConfigError,
    DecodeError,
    KafkaUnavailable,
    PlanViolation,
    RecordError,
    RetryableError,
    StateLost,
)
from consumer.events import Event, format_time_ms, wall_clock_ms
from consumer.health import Health, HealthServer
from consumer.plan import Plan, check_event
from consumer.processor import Offset, Processor
from consumer.progress import Progress
from consumer.publish import Publisher
from consumer.ratelimit import RetryPolicy
from consumer.registry import RegistryClient, value_subject
from consumer.relay import Relay
from consumer.settings import Settings
from consumer.store import Namespaces, Store, connect

log = structlog.get_logger("consumer.service")

TICK_S = 1.0
#: The longest a message waits for its batch to fill when traffic is low.
POLL_TIMEOUT_S = 0.1
#: Timer batches fired per partition and tick; the rest waits a tick.
MAX_TIMER_ROUNDS = 20
#: How long an assignment waits for Redis to say where a partition starts.
START_OFFSET_WAIT_S = 30.0
#: An event dated further ahead of its message's timestamp is set aside: a
#: clock pinned in the future would fire every timer of its contact at once.
MAX_AHEAD_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Replaying:
    """What makes a run a replay (see `consumer.replay`).

    State goes to ``namespace`` (not the active one), nothing is queued for
    Crisp, nothing is announced or dead-lettered again (the live run did
    that), and partitions without a stored offset start at ``from_ms``.
    """

    namespace: str
    from_ms: int | None = None


class Service:
    """Consume, apply, write, commit; until stopped or caught up."""

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        *,
        until_caught_up: bool = False,
        relay: bool = True,
        replay: Replaying | None = None,
        retry: RetryPolicy | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.topic = settings.topic
        self.until_caught_up = until_caught_up or replay is not None
        self._grace_ms = int(settings.timer_grace_s * 1000)
        self.replay = replay
        self.retry = retry or RetryPolicy(base_s=0.5, cap_s=30.0)
        self.clock_ms = clock_ms
        registry = (
            RegistryClient(settings.schema_registry)
            if settings.schema_registry
            else None
        )
        self.codec = EventCodec(
            registry,
            subject=value_subject(settings.topic),
            max_value_bytes=settings.max_event_bytes,
        )
        client = connect(settings.redis_url)
        self.namespaces = Namespaces(client, settings.namespace)
        data_namespace = replay.namespace if replay else self.namespaces.active()
        self.store = Store(client, data_namespace)
        self.processor = Processor(
            plan,
            self.store,
            self.topic,
            wall_clock_ms=clock_ms,
            sync=replay is None,
            dry_run=not settings.crisp_configured,
        )
        self.publisher = Publisher(
            settings.kafka_config(),
            settings.transitions_topic,
            settings.dead_letter_topic,
            TransitionCodec(
                registry, subject=value_subject(settings.transitions_topic)
            ),
        )
        self.health = Health(settings.stall_timeout_s)
        self.relay = (
            Relay(settings, plan, self.store, self.health, self.owned_partitions)
            if relay and replay is None
            else None
        )
        self._consumer: Consumer | None = None
        self._assigned: frozenset[int] = frozenset()
        self._next: dict[int, int] = {}
        self._high: dict[int, int] = {}
        self._start_high: dict[int, int] | None = None
        #: owned partitions whose offset this namespace holds in Redis
        self._kept: set[int] = set()
        self._pause_reasons: set[str] = set()
        self._stopping = threading.Event()
        self._last_tick = 0.0
        self.caught_up = False
        self._log = log.bind(topic=self.topic, group=settings.group)
        self.progress = Progress(self._log)

    # -- public ----------------------------------------------------------------

    def owned_partitions(self) -> frozenset[int]:
        """Return the partitions this process owns now (thread-safe read)."""
        return self._assigned

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and return."""
        self._stopping.set()

    def run(self) -> int:
        """Run until stopped (or caught up); return the exit code."""
        self._install_signals()
        self._log.info("service_starting", settings=self.settings.describe())
        server = HealthServer(
            self.health, self.settings.health_host, self.settings.health_port
        )
        server.start()
        self._log.info("health_listening", port=server.port)
        try:
            consumer = self._consumer = Consumer(self._consumer_config())
        except KafkaException as exc:
            server.stop()
            raise ConfigError(f"Kafka consumer settings refused: {exc}") from exc
        try:
            if self.until_caught_up:
                self._start_high = self._high_watermarks(consumer)
            consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            if self.relay is not None:
                self.relay.start()
            while not self._stopping.is_set():
                messages = consumer.consume(
                    self.settings.batch_size, timeout=POLL_TIMEOUT_S
                )
                if messages:
                    self._handle(messages)
                self.health.progress()
                if time.monotonic() - self._last_tick >= TICK_S:
                    self._tick()
                    if self._done():
                        self.caught_up = True
                        self._log.info("caught_up")
                        break
        finally:
            self._shutdown(consumer, server)
        return 0

    # -- configuration ---------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        return self.settings.kafka_config(
            **{
                "group.id": self.settings.group,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.partition.eof": False,
            }
        )

    def _high_watermarks(self, consumer: Consumer) -> dict[int, int]:
        try:
            return self._ask_high_watermarks(consumer)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"cannot read topic {self.topic!r} at {self.settings.bootstrap}: "
                f"{exc.args[0]}"
            ) from exc

    def _ask_high_watermarks(self, consumer: Consumer) -> dict[int, int]:
        metadata = consumer.list_topics(self.topic, timeout=10)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise ConfigError(f"topic {self.topic!r} does not exist")
        return {
            partition: consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=10
            )[1]
            for partition in topic.partitions
        }

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._log.info("stop_requested", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # -- rebalances ------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        for tp, done in zip(partitions, committed, strict=True):
            tp.offset = self._start_offset(consumer, tp, done.offset)
            self._next[tp.partition] = tp.offset
        consumer.incremental_assign(partitions)
        if self._pause_reasons:
            consumer.pause(partitions)
        self._assigned = self._assigned | {tp.partition for tp in partitions}
        self.health.ready()
        self._log.info(
            "partitions_assigned",
            partitions={tp.partition: tp.offset for tp in partitions},
        )

    def _start_offset(
        self, consumer: Consumer, tp: TopicPartition, committed: int
    ) -> int:
        """Where a partition starts: what the namespace's state has reached.

        Redis holds the offset the state was written up to. It is ahead of
        the committed one after a crash between the two, and behind it after
        a switch to a namespace that a replay rebuilt: either way the state
        decides, and contacts skip what they already applied. Without it the
        state has to be built: from ``--from`` (replay) or the earliest
        offset, whatever the group committed. A committed offset with no
        state behind it means Redis lost the namespace (or it is new); that
        is logged, because the rebuild reads the whole partition again.
        """
        stored = self._stored_offset(tp.partition)
        if stored is not None:
            self._check_within_topic(consumer, tp, stored)
            self._kept.add(tp.partition)
            return stored
        if committed >= 0:
            self._log.warning(
                "no_stored_offset",
                partition=tp.partition,
                committed=committed,
                detail="no state for this partition in the namespace; "
                "building it from the start of the partition",
            )
        if self.replay is not None and self.replay.from_ms is not None:
            found = consumer.offsets_for_times(
                [TopicPartition(self.topic, tp.partition, self.replay.from_ms)],
                timeout=10,
            )[0].offset
            if found >= 0:
                return int(found)
            return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        return int(consumer.get_watermark_offsets(tp, timeout=10)[0])

    def _check_within_topic(
        self, consumer: Consumer, tp: TopicPartition, stored: int
    ) -> None:
        """Refuse state that is ahead of the partition's end.

        That happens when the topic was deleted and created again: its new
        events have offsets the contacts already hold, and each would be
        skipped as applied, silently.
        """
        try:
            high = int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException:
            return  # asked again at the next assignment; Kafka is retried anyway
        if stored > high:
            raise ConfigError(
                f"partition {tp.partition} of {self.topic!r} ends at offset {high}, "
                f"but namespace {self.store.namespace!r} holds state up to {stored}: "
                "the topic was recreated or truncated. Rebuild into a new namespace "
                "(crisp-lifecycle replay) or point LIFECYCLE_NAMESPACE at a new one."
            )

    def _stored_offset(self, partition: int) -> int | None:
        """Read a partition's stored offset, waiting out a short Redis outage.

        Guessing would be wrong both ways (the committed offset may skip
        events the state never saw), so after `START_OFFSET_WAIT_S` the
        error stops the process, to be restarted when Redis answers.
        """
        deadline = time.monotonic() + START_OFFSET_WAIT_S
        while True:
            try:
                return self.store.stored_offset(self.topic, partition)
            except RetryableError as exc:
                if time.monotonic() >= deadline:
                    raise
                self._log.warning(
                    "stored_offset_unavailable", partition=partition, error=str(exc)
                )
                time.sleep(1.0)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        offsets = [
            TopicPartition(self.topic, tp.partition, self._next[tp.partition])
            for tp in partitions
            if tp.partition in self._next
        ]
        self._release(partitions)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                self._log.warning("commit_on_revoke_failed", error=str(exc))
        consumer.incremental_unassign(partitions)
        self._log.info(
            "partitions_revoked", partitions=[p.partition for p in partitions]
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(partitions)
        consumer.incremental_unassign(partitions)
        self._log.warning(
            "partitions_lost", partitions=[p.partition for p in partitions]
        )

    def _release(self, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        self._assigned = self._assigned - gone
        self._kept = self._kept - gone
        for partition in gone:
            self._next.pop(partition, None)
            self._high.pop(partition, None)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(str(partition))

    # -- batches ---------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        by_partition: dict[int, list[Message]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(error)
                continue
            by_partition.setdefault(_where(message)[0], []).append(message)
        for partition, batch in by_partition.items():
            self._handle_partition(partition, batch)

    def _handle_partition(self, partition: int, batch: list[Message]) -> None:
        items: list[Offset] = []
        next_offset = _where(batch[-1])[1] + 1
        steps: list[Callable[[], None]] = [
            lambda: items.extend(self._decode(batch)),
            lambda: self._apply(partition, items),
            lambda: self._raise_offset(partition, next_offset),
        ]
        for step in steps:
            if not self._retrying(partition, step):
                return
        self._store_offset(partition, next_offset)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaUnavailable(f"fatal consumer error: {error}")
        self._log.warning("consumer_error", error=str(error), code=error.code())

    def _decode(self, batch: list[Message]) -> list[Offset]:
        """Decode a partition's messages; dead-letter the ones that fail."""
        items: list[Offset] = []
        for message in batch:
            try:
                event = self._event(message)
            except RecordError as exc:
                if self.replay is None:
                    self.publisher.dead_letter(message, exc.reason, str(exc))
                metrics.EVENTS.labels("dead_letter").inc()
                partition, offset = _where(message)
                self._log.error(
                    "record_dead_lettered",
                    partition=partition,
                    offset=offset,
                    reason=exc.reason,
                    error=str(exc),
                )
                continue
            items.append(Offset(_where(message)[1], event))
        if len(items) < len(batch) and self.replay is None:
            self.publisher.flush()  # the dead letters, before the offsets move
        return items

    def _event(self, message: Message) -> Event:
        event = self.codec.decode(message.value())
        key = message.key()
        if key is None or key != event.contact_id.encode():
            raise BadContactId(
                "message key does not match the event's contact_id",
                raw=message.value(),
            )
        kind, produced_ms = message.timestamp()
        if (
            kind != TIMESTAMP_NOT_AVAILABLE
            and event.occurred_at_ms > produced_ms + MAX_AHEAD_MS
        ):
            # Measured against the message's own timestamp, not the wall
            # clock, so that a replay decides the same.
            raise DecodeError(
                f"occurred_at {format_time_ms(event.occurred_at_ms)} is more than "
                f"a day after the message was produced "
                f"({format_time_ms(produced_ms)})",
                raw=message.value(),
            )
        verdict = check_event(self.plan, event)
        if not verdict.accepted:
            raise PlanViolation(verdict.problem or "not in plan", raw=message.value())
        if verdict.problem:
            metrics.EVENTS.labels("reported").inc()
            self._log.warning(
                "event_not_in_plan",
                contact_id=event.contact_id,
                event_name=event.name,
                reason=verdict.reason,
                problem=verdict.problem,
            )
        return event

    def _apply(self, partition: int, items: list[Offset]) -> None:
        if not items:
            return
        with metrics.BATCH_SECONDS.time():
            result = self.processor.process(partition, items, self._announce)
        metrics.EVENTS.labels("applied").inc(result.applied)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        self._log.debug(
            "batch_applied",
            partition=partition,
            applied=result.applied,
            duplicates=result.duplicates,
            transitions=len(result.transitions),
            conflicts=result.conflicts,
        )

    def _announce(self, transitions: list[Transition]) -> None:
        if not transitions or self.replay is not None:
            return
        self.publisher.transitions(transitions)
        self.publisher.flush()
        for transition in transitions:
            metrics.TRANSITIONS.labels(transition.lifecycle, transition.to_stage).inc()
            self._log.info(
                "stage_changed",
                contact_id=transition.contact_id,
                lifecycle=transition.lifecycle,
                from_stage=transition.from_stage,
                to_stage=transition.to_stage,
                rule=transition.rule_id,
            )

    def _store_offset(self, partition: int, next_offset: int) -> None:
        if partition not in self._assigned or self._consumer is None:
            return
        self._kept.add(partition)
        self._next[partition] = next_offset
        self._consumer.store_offsets(
            offsets=[TopicPartition(self.topic, partition, next_offset)]
        )

    def _retrying(self, partition: int, action: Callable[[], None]) -> bool:
        """Run ``action`` until it succeeds; False if the partition went away."""
        attempt = 0
        try:
            while True:
                if partition not in self._assigned:
                    return False
                if attempt and self._stopping.is_set():
                    self._log.warning("batch_abandoned_on_stop", partition=partition)
                    return False
                try:
                    action()
                    return True
                except RetryableError as exc:
                    attempt += 1
                    delay = self.retry.delay_s(attempt)
                    self._log.warning(
                        "transient_failure",
                        partition=partition,
                        error=str(exc),
                        attempt=attempt,
                        retry_in_s=round(delay, 2),
                    )
                    self._pause("retry")
                    self._idle(delay)
        finally:
            if attempt:
                self._resume("retry")

    def _idle(self, seconds: float) -> None:
        """Wait while paused, serving rebalances and staying in the group."""
        deadline = time.monotonic() + seconds
        consumer = self._consumer
        while consumer is not None and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=min(0.5, seconds)):
                if message.error() is None:
                    # A partition assigned while we waited and not yet paused:
                    # read it again later rather than drop it.
                    consumer.seek(TopicPartition(self.topic, *_where(message)))
            self.health.progress()
            if self._stopping.is_set():
                return

    def _pause(self, reason: str) -> None:
        if not self._pause_reasons and self._consumer is not None:
            self._consumer.pause(self._owned_topic_partitions())
            metrics.PAUSED.set(1)
            self._log.info("partitions_paused", reason=reason)
        self._pause_reasons.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self._consumer is not None:
            self._consumer.resume(self._owned_topic_partitions())
            metrics.PAUSED.set(0)
            self._log.info("partitions_resumed", reason=reason)

    def _owned_topic_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self._assigned)]

    # -- timers, lag, backpressure -------------------------------------------------

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        consumer = self._consumer
        if consumer is None:
            return
        self._follow_namespace(consumer)
        self._check_state_kept()
        now_ms = self.clock_ms()
        for partition in sorted(self._assigned):
            high = self._high_watermark(consumer, partition)
            if high is None:
                continue
            self._high[partition] = high
            behind = max(high - self._next.get(partition, high), 0)
            metrics.LAG.labels(str(partition)).set(behind)
            if behind == 0:
                self._retrying(
                    partition,
                    functools.partial(
                        self._fire_timers, partition, now_ms - self._grace_ms
                    ),
                )
        self._backpressure(now_ms)
        if self.replay is not None:
            self.progress.update(self._next, self._high)

    def _follow_namespace(self, consumer: Consumer) -> None:
        """Move to the namespace a replay switched to, without a restart.

        Each owned partition then continues from the offset the new state
        was written up to; contacts skip what they already hold.
        """
        if self.replay is not None:
            return
        try:
            active = self.namespaces.active()
            if active == self.store.namespace:
                return
            self._log.info("namespace_switched", old=self.store.namespace, new=active)
            self.store.namespace = active
            self._kept = set()
            for partition in sorted(self._assigned):
                stored = self.store.stored_offset(self.topic, partition)
                if stored is not None:
                    consumer.seek(TopicPartition(self.topic, partition, stored))
                    self._next[partition] = stored
                    self._kept.add(partition)
        except RetryableError as exc:
            self._log.warning("namespace_check_failed", error=str(exc))

    def _raise_offset(self, partition: int, next_offset: int) -> None:
        kept = partition in self._kept
        if not self.store.raise_offset(self.topic, partition, next_offset, kept=kept):
            self._state_lost([partition])

    def _check_state_kept(self) -> None:
        """Look for offsets of idle partitions that vanished (a busy one is
        caught by the offset write of its next batch)."""
        watched = sorted(self._kept & self._assigned)
        try:
            missing = [
                p for p in watched if self.store.stored_offset(self.topic, p) is None
            ]
            if missing:
                self._state_lost(missing)
        except RetryableError:
            return  # asked again at the next tick

    def _state_lost(self, partitions: list[int]) -> None:
        """Stop: Redis lost the namespace under this process.

        An offset the namespace held vanishes only when Redis lost its data
        (or someone deleted the namespace). The events applied since started
        their contacts afresh, so that partial state is wrong: it is deleted,
        and the process stops. The next start finds no state and builds every
        partition from the topic (`_start_offset`).
        """
        namespace = self.store.namespace
        dropped = self.namespaces.drop(namespace)
        self._log.error(
            "state_lost", namespace=namespace, partitions=partitions, dropped=dropped
        )
        raise StateLost(
            f"Redis lost the state of namespace {namespace!r} (partitions "
            f"{partitions} had no offset any more): the partial state written "
            "since is deleted; start again to rebuild every partition from the topic"
        )

    def _high_watermark(self, consumer: Consumer, partition: int) -> int | None:
        """Return a partition's high watermark, from the last fetch if known.

        The cached value comes with every fetch response; asking the broker
        instead would queue behind the consumer's long-polling fetch and
        stall the loop, so that happens only before the first fetch.
        """
        tp = TopicPartition(self.topic, partition)
        high = consumer.get_watermark_offsets(tp, cached=True)[1]
        if high >= 0:
            return int(high)
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=1)[1])
        except KafkaException as exc:
            self._log.debug("watermark_unknown", partition=partition, error=str(exc))
            return None

    def _fire_timers(self, partition: int, now_ms: int) -> None:
        key = self.store.timers_key(self.topic, partition)
        for _ in range(MAX_TIMER_ROUNDS):
            if not self.store.due_members(key, now_ms, 1):
                return
            self.processor.fire_timers(partition, now_ms, self._announce)

    def _backpressure(self, now_ms: int) -> None:
        if self.relay is None:
            return
        keys = [self.store.outbox_key(self.topic, p) for p in self._assigned]
        try:
            depth, earliest = self.store.index_depth(keys)
        except RetryableError:
            return
        age_s = max((now_ms - earliest) / 1000, 0.0) if earliest is not None else 0.0
        metrics.OUTBOX_DEPTH.set(depth)
        metrics.OUTBOX_AGE.set(age_s)
        too_deep = depth > self.settings.outbox_pause_depth
        too_old = age_s > self.settings.outbox_pause_age_s
        if too_deep or too_old:
            self._pause("backpressure")
        elif depth <= self.settings.outbox_pause_depth // 2:
            self._resume("backpressure")

    def _done(self) -> bool:
        """True once every partition of the topic has reached the high
        watermark taken at start and holds no due timer, and (with a relay)
        no pending Crisp update.

        A partition this process does not own counts through the offset its
        namespace stored: another member may be working on it, or a killed
        one may hold it until its session times out and it comes here.
        """
        if self._start_high is None or not self._assigned:
            return False
        try:
            return self._nothing_left(self._start_high)
        except RetryableError as exc:
            self._log.warning("done_check_failed", error=str(exc))
            return False

    def _nothing_left(self, start_high: dict[int, int]) -> bool:
        for partition, high in start_high.items():
            if partition in self._assigned:
                reached = self._next.get(partition, 0)
            else:
                reached = self.store.stored_offset(self.topic, partition) or 0
            if reached < high:
                return False
        now_ms = self.clock_ms() - self._grace_ms
        for partition in start_high:
            key = self.store.timers_key(self.topic, partition)
            if self.store.due_members(key, now_ms, 1):
                return False
        if self.relay is not None:
            keys = [self.store.outbox_key(self.topic, p) for p in start_high]
            depth, _ = self.store.index_depth(keys)
            if depth or self.relay.busy():
                return False
        return True

    # -- shutdown ----------------------------------------------------------------

    def _shutdown(self, consumer: Consumer, server: HealthServer) -> None:
        self.progress.close()
        if self.relay is not None:
            self.relay.stop()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # Nothing stored since the last commit is the usual case here.
            self._log.debug("final_commit_skipped", error=str(exc))
        consumer.close()
        self.publisher.close()
        server.stop()
        self._log.info("service_stopped")


def _where(message: Message) -> tuple[int, int]:
    """Return the partition and offset of a consumed message."""
    partition, offset = message.partition(), message.offset()
    # Consumed messages always carry both; only produced ones may not.
    assert partition is not None and offset is not None
    return partition, offset
