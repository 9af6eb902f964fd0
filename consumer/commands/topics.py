"""``crisp-lifecycle topics create``: the three topics the service uses."""

from __future__ import annotations

import argparse
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.commands._common import add_service_flags, settings_from
from consumer.errors import KafkaUnavailable


def register(subparsers: Any) -> None:
    """Add the ``topics`` command group."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "topics", help="create the events, transitions and dead-letter topics"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="create the topics that do not exist yet"
    )
    create.add_argument("--partitions", type=int, default=3)
    create.add_argument("--replication-factor", type=int, default=1)
    add_service_flags(create, "--bootstrap", "--topic", "--kafka-option")
    create.set_defaults(handler=run_create)


def run_create(args: argparse.Namespace) -> int:
    """Create missing topics; existing ones are left as they are."""
    settings = settings_from(args)
    admin = AdminClient(settings.kafka_config())
    wanted = {
        settings.topic: args.partitions,
        settings.transitions_topic: args.partitions,
        settings.dead_letter_topic: 1,
    }
    futures = admin.create_topics(
        [
            NewTopic(
                name, num_partitions=count, replication_factor=args.replication_factor
            )
            for name, count in wanted.items()
        ],
        operation_timeout=30,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=60)
            print(f"created {name} ({wanted[name]} partitions)")
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and (
                error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                print(f"exists  {name}")
                continue
            raise KafkaUnavailable(f"cannot create topic {name}: {error}") from exc
    return 0
