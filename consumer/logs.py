"""Configure structlog once, at the entry point.

JSON lines when standard error is not a terminal, readable console output
when it is. Emails and secrets never reach a log line: the `redact` processor
masks any field whose name says it holds one, whatever the caller passed,
and any address inside other text (an event name, a property, an error).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_FIELDS = frozenset(
    {"email", "password", "token", "token_key", "crisp_key", "secret", "api_key"}
)


#: Anything shaped like an address, wherever it appears in a value: event
#: names, property values and error texts can carry one.
_EMAIL = re.compile(r"[^\s@'\"<>(),;:\[\]{}]+@[^\s@'\"<>(),;:\[\]{}]+\.[A-Za-z]{2,}")


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask fields that hold emails or secrets, and addresses in any text."""
    for key, value in event_dict.items():
        if key in _SECRET_FIELDS:
            if value is not None:
                event_dict[key] = "***"
        elif isinstance(value, str) and "@" in value:
            event_dict[key] = _EMAIL.sub("***@***", value)
    return event_dict


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Set up structlog for the whole process; safe to call again."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def kafka_logger() -> logging.Logger:
    """Return the logger to hand librdkafka as its ``logger`` setting.

    Without one, librdkafka prints lines of its own to standard error; with
    it, each line becomes a ``kafka_client`` event in the structured log,
    carrying the client's facility (``FAIL``, ``CONFWARN``, ...) and text.
    librdkafka delivers them from whichever thread polls the client.
    """
    logger = logging.getLogger("consumer.librdkafka")
    if not logger.handlers:
        logger.addHandler(_KafkaLines())
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


class _KafkaLines(logging.Handler):
    """Forward confluent-kafka's log records (``"%s [%s] %s"``: facility,
    client name, text) to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 3:
            facility, client, text = (str(arg) for arg in args)
        else:
            facility, client, text = "", "", record.getMessage()
        structlog.get_logger("librdkafka").log(
            record.levelno,
            "kafka_client",
            facility=facility,
            client=client,
            message=text,
        )
