"""``crisp-lifecycle sync``: the Crisp relay on its own, for every partition."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

import structlog
from confluent_kafka.admin import AdminClient

from consumer.commands._common import (
    active_store,
    add_service_flags,
    settings_from,
)
from consumer.errors import ConfigError, RetryableError
from consumer.health import Health
from consumer.plan import load_plan
from consumer.relay import Relay
from consumer.store import Namespaces, Store

log = structlog.get_logger("consumer.sync")


def register(subparsers: Any) -> None:
    """Add the ``sync`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sync",
        help="send due Crisp updates (the relay alone)",
        description="Send the due outbox entries of every partition of the "
        "topic to Crisp. Use it when `run --no-relay` consumes elsewhere; it "
        "is safe beside running relays (writes are fenced), though two "
        "relays may both send one update.",
    )
    add_service_flags(
        parser,
        "--bootstrap",
        "--topic",
        "--redis-url",
        "--namespace",
        "--plan",
        "--kafka-option",
    )
    parser.add_argument(
        "--once", action="store_true", help="send what is due now, then exit"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Relay until stopped (or once)."""
    settings = settings_from(args)
    plan = load_plan(settings.plan)
    admin = AdminClient(settings.kafka_config())
    topic = admin.list_topics(settings.topic, timeout=10).topics.get(settings.topic)
    if topic is None or topic.error is not None:
        raise ConfigError(f"topic {settings.topic!r} does not exist")
    partitions = frozenset(topic.partitions)
    store = active_store(settings)
    relay = Relay(
        settings, plan, store, Health(settings.stall_timeout_s), lambda: partitions
    )
    if args.once:
        while relay.run_once():
            pass
        relay.stop()
        return 0
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    relay.start()
    names = Namespaces(store.client, settings.namespace)
    while not stopped.wait(1.0):
        _follow(names, store)
    relay.stop()
    log.info("sync_stopped")
    return 0


def _follow(names: Namespaces, store: Store) -> None:
    """Move the relay to the namespace a replay switched to."""
    try:
        active = names.active()
    except RetryableError as exc:
        log.warning("namespace_check_failed", error=str(exc))
        return
    if active != store.namespace:
        log.info("namespace_switched", old=store.namespace, new=active)
        store.namespace = active
