"""Metrics and the health endpoint.

Every Prometheus metric of the service is defined here, in one registry.
`HealthServer` serves ``/metrics``, ``/healthz`` (fails when the poll loop
has not reported progress within the stall timeout, or when Crisp refused the
credentials) and ``/readyz`` (fails until partitions are assigned once).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from consumer.errors import ConfigError

REGISTRY = CollectorRegistry()

EVENTS = Counter(
    "lifecycle_events_total",
    "Messages consumed, by outcome (applied, duplicate, dead_letter, reported).",
    ["outcome"],
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "lifecycle_transitions_total",
    "Stage transitions, by lifecycle and stage entered.",
    ["lifecycle", "stage"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "lifecycle_batch_seconds",
    "Time to apply and write one batch.",
    registry=REGISTRY,
)
LAG = Gauge(
    "lifecycle_partition_lag",
    "High watermark minus next offset to read, per partition.",
    ["partition"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "lifecycle_outbox_depth",
    "Pending Crisp updates of the partitions this process owns.",
    registry=REGISTRY,
)
OUTBOX_AGE = Gauge(
    "lifecycle_outbox_oldest_age_seconds",
    "Age of the most overdue pending Crisp update.",
    registry=REGISTRY,
)
CRISP_CALLS = Counter(
    "lifecycle_crisp_requests_total",
    "Crisp HTTP requests, by status (or error kind).",
    ["status"],
    registry=REGISTRY,
)
CRISP_SYNCS = Counter(
    "lifecycle_crisp_syncs_total",
    "Outbox entries handled, by result.",
    ["result"],
    registry=REGISTRY,
)
QUOTA_USED = Gauge(
    "lifecycle_crisp_quota_used_today",
    "Crisp requests spent today by this process.",
    registry=REGISTRY,
)
PAUSED = Gauge(
    "lifecycle_consumer_paused",
    "1 while partitions are paused (outbox backpressure or a retry).",
    registry=REGISTRY,
)


class Health:
    """What the health endpoint reports; updated by the loops."""

    def __init__(self, stall_timeout_s: float) -> None:
        self.stall_timeout_s = stall_timeout_s
        self._last_progress = time.monotonic()
        self._ready = False
        self._fatal: str | None = None
        self._lock = threading.Lock()

    def progress(self) -> None:
        """Record that the poll loop completed an iteration."""
        with self._lock:
            self._last_progress = time.monotonic()

    def ready(self) -> None:
        """Record that the consumer has joined its group."""
        with self._lock:
            self._ready = True

    def fail(self, reason: str) -> None:
        """Mark the process unhealthy until restarted (e.g. Crisp 401)."""
        with self._lock:
            self._fatal = reason

    def status(self) -> tuple[bool, str]:
        """Return (healthy, reason)."""
        with self._lock:
            if self._fatal:
                return False, self._fatal
            stalled = time.monotonic() - self._last_progress
            if stalled > self.stall_timeout_s:
                return False, f"poll loop stalled for {stalled:.0f}s"
            return True, "ok"

    def is_ready(self) -> bool:
        """Return True once partitions were assigned."""
        with self._lock:
            return self._ready


class HealthServer:
    """Serve /healthz, /readyz and /metrics on a background thread."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self.health = health
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Bind and serve; port 0 picks a free port (see `port` after)."""
        health = self.health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok, reason = health.status()
                    self._answer(200 if ok else 503, reason.encode(), "text/plain")
                elif self.path == "/readyz":
                    ready = health.is_ready()
                    body = b"ready" if ready else b"not ready"
                    self._answer(200 if ready else 503, body, "text/plain")
                else:
                    self._answer(404, b"not found", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /healthz on {self.host}:{self.port}: {exc.strerror} "
                "(set LIFECYCLE_HEALTH_PORT, or --health-port)"
            ) from exc
        self.port = self._server.server_address[1]
        thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )
        thread.start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
