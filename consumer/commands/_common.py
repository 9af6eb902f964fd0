"""Flags that several commands share, each backed by an environment variable.

A flag overrides its variable; a variable overrides the default. The names of
the variables live in `consumer.settings`.
"""

from __future__ import annotations

import argparse
import dataclasses

from consumer.errors import ConfigError
from consumer.settings import ENVIRONMENT, Settings
from consumer.store import Namespaces, Store, connect

#: flag -> setting it overrides
_FLAGS = {
    "--bootstrap": "bootstrap",
    "--topic": "topic",
    "--group": "group",
    "--redis-url": "redis_url",
    "--namespace": "namespace",
    "--plan": "plan",
    "--schema-registry": "schema_registry",
}


def add_service_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared flags named (all of them when none are named)."""
    for flag, setting in _FLAGS.items():
        if names and flag not in names:
            continue
        variable, default = ENVIRONMENT[setting]
        parser.add_argument(
            flag,
            dest=setting,
            default=None,
            help=f"overrides ${variable} (default {default!r})",
        )
    if not names or "--kafka-option" in names:
        parser.add_argument(
            "--kafka-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a librdkafka setting, e.g. security.protocol=SSL (repeatable)",
        )


def settings_from(args: argparse.Namespace) -> Settings:
    """Return the settings from the environment with the flags applied."""
    settings = Settings.from_env()
    changes = {
        setting: getattr(args, setting)
        for setting in _FLAGS.values()
        if getattr(args, setting, None) is not None
    }
    options = dict(settings.kafka_options)
    for option in getattr(args, "kafka_option", []):
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ConfigError(f"--kafka-option wants KEY=VALUE, not {option!r}")
        options[key.strip()] = value
    changes["kafka_options"] = options
    settings = dataclasses.replace(settings, **changes)
    settings.validate()
    return settings


def active_store(settings: Settings) -> Store:
    """Return the store of the namespace that live consumers use now.

    ``--namespace`` names a base; once a replay has switched, the base's
    pointer names the rebuilt namespace (`consumer.store.Namespaces`), and
    that is the one to read and change.
    """
    client = connect(settings.redis_url)
    return Store(client, Namespaces(client, settings.namespace).active())
