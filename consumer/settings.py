"""Every setting of the service, read once from the environment.

`Settings` is frozen; commands build it with `Settings.from_env` and then
apply their flags with `dataclasses.replace`. Every environment variable the
service reads is named in this module and nowhere else. Secrets are kept out
of `repr` and of `Settings.describe`, which is what the service logs at start.

Kafka client settings pass through: ``LIFECYCLE_KAFKA_SECURITY_PROTOCOL=SSL``
becomes ``security.protocol=SSL`` for every producer and consumer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from consumer.errors import ConfigError
from consumer.logs import kafka_logger

KAFKA_PASSTHROUGH_PREFIX = "LIFECYCLE_KAFKA_"

#: setting name -> (environment variable, default)
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "bootstrap": ("LIFECYCLE_BOOTSTRAP", "127.0.0.1:9092"),
    "topic": ("LIFECYCLE_TOPIC", "lifecycle.events"),
    "transitions_topic": ("LIFECYCLE_TRANSITIONS_TOPIC", "lifecycle.transitions"),
    "dead_letter_topic": ("LIFECYCLE_DEAD_LETTER_TOPIC", "lifecycle.events.dlq"),
    "group": ("LIFECYCLE_GROUP", "crisp-lifecycle"),
    "redis_url": ("LIFECYCLE_REDIS_URL", "redis://127.0.0.1:6390/0"),
    "namespace": ("LIFECYCLE_NAMESPACE", "lc"),
    "plan": ("LIFECYCLE_PLAN", "plans/default.yaml"),
    "schema_registry": ("LIFECYCLE_SCHEMA_REGISTRY", ""),
    "health_port": ("LIFECYCLE_HEALTH_PORT", "8000"),
    "health_host": ("LIFECYCLE_HEALTH_HOST", "127.0.0.1"),
    "batch_size": ("LIFECYCLE_BATCH_SIZE", "2000"),
    "max_event_bytes": ("LIFECYCLE_MAX_EVENT_BYTES", "1048576"),
    "stall_timeout_s": ("LIFECYCLE_STALL_TIMEOUT_S", "60"),
    "outbox_pause_depth": ("LIFECYCLE_OUTBOX_PAUSE_DEPTH", "50000"),
    "outbox_pause_age_s": ("LIFECYCLE_OUTBOX_PAUSE_AGE_S", "3600"),
    "timer_grace_s": ("LIFECYCLE_TIMER_GRACE_S", "2"),
    "crisp_base_url": ("CRISP_BASE_URL", "https://api.crisp.chat/v1"),
    "crisp_website_id": ("CRISP_WEBSITE_ID", ""),
    "crisp_identifier": ("CRISP_IDENTIFIER", ""),
    "crisp_key": ("CRISP_KEY", ""),
    "crisp_tier": ("CRISP_TIER", "plugin"),
    "crisp_daily_budget": ("CRISP_DAILY_BUDGET", "5000"),
    "crisp_max_rps": ("CRISP_MAX_RPS", "5"),
    "crisp_concurrency": ("CRISP_CONCURRENCY", "4"),
    "crisp_timeout_s": ("CRISP_TIMEOUT_S", "10"),
    "crisp_quota_pause_s": ("CRISP_QUOTA_PAUSE_S", "3600"),
}

_SECRETS = frozenset({"crisp_key"})
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster")
#: setting, lowest and highest accepted value
_RANGES: tuple[tuple[str, float, float], ...] = (
    ("health_port", 0, 65535),
    ("batch_size", 1, 100_000),
    ("max_event_bytes", 1, 100 * 1024 * 1024),
    ("stall_timeout_s", 1, 86_400),
    ("outbox_pause_depth", 1, 10**9),
    ("outbox_pause_age_s", 1, 10**7),
    ("timer_grace_s", 0, 86_400),
    ("crisp_daily_budget", 0, 10**9),
    ("crisp_max_rps", 0.001, 10_000),
    ("crisp_concurrency", 1, 256),
    ("crisp_timeout_s", 0.1, 600),
    ("crisp_quota_pause_s", 1, 86_400),
)


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one process."""

    bootstrap: str
    topic: str
    transitions_topic: str
    dead_letter_topic: str
    group: str
    redis_url: str
    namespace: str
    plan: str
    schema_registry: str
    health_port: int
    health_host: str
    batch_size: int
    max_event_bytes: int
    stall_timeout_s: float
    outbox_pause_depth: int
    outbox_pause_age_s: float
    timer_grace_s: float
    crisp_base_url: str
    crisp_website_id: str
    crisp_identifier: str
    crisp_key: str = field(repr=False)
    crisp_tier: str
    crisp_daily_budget: int
    crisp_max_rps: float
    crisp_concurrency: int
    crisp_timeout_s: float
    crisp_quota_pause_s: float
    kafka_options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from the environment, with defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, (variable, default) in ENVIRONMENT.items():
            raw = env.get(variable, default)
            values[name] = _convert(variable, raw, str(types[name]))
        values["kafka_options"] = {
            key[len(KAFKA_PASSTHROUGH_PREFIX) :].lower().replace("_", "."): value
            for key, value in env.items()
            if key.startswith(KAFKA_PASSTHROUGH_PREFIX)
        }
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise `ConfigError` naming the variable of a bad setting."""
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                variable = ENVIRONMENT[name][0]
                raise ConfigError(
                    f"{variable} must be between {low} and {high}, not {value}"
                )
        scheme = self.redis_url.partition("://")[0]
        if scheme not in _REDIS_SCHEMES:
            raise ConfigError(
                "LIFECYCLE_REDIS_URL must start with "
                + ", ".join(f"{s}://" for s in _REDIS_SCHEMES)
                + f", not {_redact_url(self.redis_url)!r}"
            )
        if self.crisp_tier not in {"plugin", "website"}:
            raise ConfigError(
                f"CRISP_TIER must be plugin or website, not {self.crisp_tier!r}"
            )
        if self.crisp_website_id and not (self.crisp_identifier and self.crisp_key):
            raise ConfigError(
                "CRISP_WEBSITE_ID is set: CRISP_IDENTIFIER and CRISP_KEY are needed"
            )
        if not self.namespace or any(c in self.namespace for c in "{}: "):
            raise ConfigError(
                "LIFECYCLE_NAMESPACE must be non-empty, without braces, "
                f"colons or spaces: {self.namespace!r}"
            )

    @property
    def crisp_configured(self) -> bool:
        """True when Crisp credentials are set; otherwise sync is a dry run."""
        return bool(self.crisp_website_id and self.crisp_identifier)

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """Return librdkafka settings: bootstrap, pass-through, then overrides.

        The client's own log lines go to the structured log (`kafka_logger`).
        """
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "logger": kafka_logger(),
        }
        config.update(self.kafka_options)
        config.update(overrides)
        return config

    def describe(self) -> dict[str, Any]:
        """Return the settings for a log line, secrets redacted."""
        described: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in _SECRETS:
                value = "***" if value else ""
            elif item.name == "kafka_options":
                value = {
                    key: "***" if _looks_secret(key) else val
                    for key, val in value.items()
                }
            elif item.name == "redis_url":
                value = _redact_url(value)
            described[item.name] = value
        return described


def _looks_secret(key: str) -> bool:
    return any(word in key for word in ("password", "secret", "key", "token"))


def _redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"


def _convert(variable: str, raw: str, type_name: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            number = float(raw)
            if math.isfinite(number):
                return number
    except ValueError:
        pass
    else:
        if type_name not in {"int", "float"}:
            return raw
    kind = "a whole number" if type_name == "int" else "a number"
    raise ConfigError(f"{variable} must be {kind}, not {raw!r}")
