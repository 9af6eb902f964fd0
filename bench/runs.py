"""The three throughput runs over the same topic: ceiling, service, replay.

Each run is a subprocess measured by `bench.child`. Events per second are
taken over the consuming window, from the first progress to the last event,
so that interpreter start-up and the group join count in ``wall_s`` but not
in the rate:

* the ceiling reports the wall-clock times of its first and last message;
* the service and the replay store the next offset of each partition in
  Redis after every batch (``<namespace>:offsets``); the monitor polls their
  sum every 50 ms, and the window runs from the first stored offset to the
  last, counting only the events written after the first batch.

The service runs exactly as ``crisp-lifecycle run --until-caught-up`` with
Crisp in dry run: it also publishes transitions, runs the dry-run relay and
waits for the outbox to drain (the 5 s debounce) before it exits, which
``wall_s`` includes.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.child import PROGRESS_EVERY_S, Child, ChildRun
from bench.workload import REPO

DEFAULT_PLAN = REPO / "plans" / "default.yaml"
#: Contacts whose ``MEMORY USAGE`` is summed to cross-check ``INFO memory``.
MEMORY_SAMPLE = 1000
#: Shortest consuming window timed by polling progress (20 polls).
MIN_WINDOW_S = 20 * PROGRESS_EVERY_S
_METRIC_LINE = re.compile(
    r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$"
)


@dataclass(frozen=True)
class Deployment:
    """The settings of one ``python -m consumer`` process, as its environment."""

    bootstrap: str
    redis_url: str
    topic: str
    transitions_topic: str
    dead_letter_topic: str
    group: str
    namespace: str
    plan: Path = DEFAULT_PLAN
    extra: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str]:
        """Return the environment: this deployment's settings, no Crisp ones."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LIFECYCLE_", "CRISP_"))
        }
        env.update(
            LIFECYCLE_BOOTSTRAP=self.bootstrap,
            LIFECYCLE_REDIS_URL=self.redis_url,
            LIFECYCLE_TOPIC=self.topic,
            LIFECYCLE_TRANSITIONS_TOPIC=self.transitions_topic,
            LIFECYCLE_DEAD_LETTER_TOPIC=self.dead_letter_topic,
            LIFECYCLE_GROUP=self.group,
            LIFECYCLE_NAMESPACE=self.namespace,
            LIFECYCLE_PLAN=str(self.plan),
            LIFECYCLE_HEALTH_HOST="127.0.0.1",
            LIFECYCLE_HEALTH_PORT="0",
        )
        env.update(self.extra)
        return env

    def command(self, *args: str) -> list[str]:
        """Return the command line of ``python -m consumer ARGS``."""
        return [sys.executable, "-m", "consumer", *args]


def stored_progress(client: redis.Redis, namespace: str) -> int:
    """Return the events a namespace has written: the sum of its offsets.

    Every partition of a fresh topic starts at offset 0, so the sum of the
    next offsets is the number of events read and written.
    """
    values: Any = client.hvals(f"{namespace}:offsets")
    return sum(int(value) for value in values)


def throughput(run: ChildRun, events: int) -> dict[str, Any]:
    """Return the common fields of a throughput run.

    A window shorter than `MIN_WINDOW_S` (a tiny run) cannot be timed by
    polling; the rate is then taken from the process start instead, and
    ``rate_basis`` says so.
    """
    window = rate = None
    basis = "consume window"
    if run.first_progress_s is not None and run.done_s is not None:
        window = run.done_s - run.first_progress_s
        counted = events - run.progress_at_first
        if window >= MIN_WINDOW_S and counted > 0:
            rate = counted / window
        elif run.done_s > 0:
            rate, basis = events / run.done_s, "process start"
    return {
        "events": events,
        "returncode": run.returncode,
        "wall_s": round(run.wall_s, 3),
        "startup_s": _rounded(run.first_progress_s),
        "consume_s": _rounded(window),
        "events_per_s": round(rate) if rate else None,
        "rate_basis": basis,
        "cpu_s": round(run.cpu_s, 3),
        "user_s": round(run.user_s, 3),
        "system_s": round(run.system_s, 3),
        "cpu_us_per_event": round(run.cpu_s / events * 1e6, 1) if events else None,
        "peak_rss_mb": round(run.peak_rss_mb, 1),
    }


def measure_ceiling(
    bootstrap: str, topic: str, events: int, workdir: Path, timeout_s: float
) -> dict[str, Any]:
    """Decode the whole topic in a plain consumer; return its costs."""
    child = Child(
        "ceiling",
        [sys.executable, "-m", "bench.ceiling", bootstrap, topic, str(events)],
        dict(os.environ),
        workdir,
        cwd=REPO,
    ).start()
    run = child.wait(timeout_s)
    _check(child, run)
    reported = json.loads(child.stdout())
    window = reported["last_s"] - reported["first_s"]
    result = throughput(run, events)
    result.update(consume_s=round(window, 3), decode_failures=reported["failures"])
    # The ceiling times itself: no polling, so any window is exact.
    if window > 0:
        rate, basis = reported["events"] / window, "first to last message"
    else:
        rate, basis = events / run.wall_s, "process start"
    result.update(events_per_s=round(rate), rate_basis=basis)
    return result


def measure_service(
    deployment: Deployment,
    client: redis.Redis,
    events: int,
    contacts: int,
    workdir: Path,
    timeout_s: float,
) -> dict[str, Any]:
    """Run the service from the start of the topic until it has caught up."""
    before = _used_memory(client)
    probe = MetricsProbe(workdir / "service.log")
    child = Child(
        "service",
        deployment.command("run", "--until-caught-up"),
        deployment.environ(),
        workdir,
        cwd=REPO,
        progress=lambda: stored_progress(client, deployment.namespace),
        target=events,
        every_second=probe,
    ).start()
    run = child.wait(timeout_s)
    _check(child, run)
    after = _used_memory(client)
    result = throughput(run, events)
    written, sampled = _sampled_memory(client, deployment.namespace)
    result.update(
        contacts_written=written,
        redis_used_memory_before=before,
        redis_used_memory_after=after,
        redis_bytes_per_contact=round((after - before) / contacts)
        if contacts
        else None,
        redis_sampled_bytes_per_contact=sampled,
        rss_mb_at={
            f"{share}%": _rounded(run.rss_at(share / 100), 1)
            for share in (25, 50, 75, 100)
        },
        rss_peak_mb_halves=run.rss_peaks(),
        rss_mb_series=run.rss_series(),
        metrics=probe.summary(),
    )
    return result


def measure_replay(
    deployment: Deployment,
    client: redis.Redis,
    events: int,
    into: str,
    workdir: Path,
    timeout_s: float,
) -> dict[str, Any]:
    """Replay the topic into ``into`` beside the service's namespace."""
    child = Child(
        "replay",
        deployment.command("replay", "--namespace", into),
        deployment.environ(),
        workdir,
        cwd=REPO,
        progress=lambda: stored_progress(client, into),
        target=events,
    ).start()
    run = child.wait(timeout_s)
    _check(child, run)
    result = throughput(run, events)
    lines = child.stdout().splitlines()
    result["summary"] = next((line for line in lines if "rebuilt" in line), None)
    finished = run.wall_s - run.done_s if run.done_s is not None else None
    result["after_build_s"] = _rounded(finished)
    return result


class MetricsProbe:
    """Scrape the service's ``/metrics`` once a second; keep the last answer.

    The port is the one the service logged (``health_listening``): it binds
    port 0 on loopback.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port: int | None = None
        self.text = ""

    def __call__(self) -> None:
        """Scrape once (called by the monitor thread)."""
        if self.port is None:
            self.port = _logged_port(self.log_path)
            if self.port is None:
                return
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=1.0)
        except httpx.HTTPError:
            return
        if answer.status_code == 200:
            self.text = answer.text

    def summary(self) -> dict[str, float]:
        """Return the batch timings and event outcomes of the last scrape."""
        wanted = {
            "lifecycle_batch_seconds_sum": "batch_seconds_sum",
            "lifecycle_batch_seconds_count": "batches",
        }
        found: dict[str, float] = {}
        for line in self.text.splitlines():
            match = _METRIC_LINE.match(line)
            if match is None:
                continue
            name, labels = match["name"], match["labels"] or ""
            if name in wanted:
                found[wanted[name]] = round(float(match["value"]), 3)
            elif name == "lifecycle_events_total":
                outcome = labels.partition('outcome="')[2].rstrip('"')
                found[f"events_{outcome}"] = float(match["value"])
        return found


def _logged_port(log_path: Path) -> int | None:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if '"health_listening"' in line:
            try:
                return int(json.loads(line)["port"])
            except (ValueError, KeyError):
                return None
    return None


def _used_memory(client: redis.Redis) -> int:
    info: Any = client.info("memory")
    return int(info["used_memory"])


def _sampled_memory(client: redis.Redis, namespace: str) -> tuple[int, int | None]:
    """Return the contacts written and an estimate of bytes per contact.

    ``MEMORY USAGE`` of up to `MEMORY_SAMPLE` random contact hashes, scaled
    to all of them, plus the whole timer and outbox indexes: an estimate
    that other clients of the same Redis cannot disturb, unlike ``INFO``.
    """
    keys = list(client.scan_iter(match=f"{namespace}:c:*", count=5000))
    if not keys:
        return 0, None
    sample = random.Random(1).sample(keys, min(MEMORY_SAMPLE, len(keys)))
    pipe = client.pipeline(transaction=False)
    for key in sample:
        pipe.memory_usage(key, samples=0)
    sizes = [int(size or 0) for size in pipe.execute()]
    total = sum(sizes) / len(sizes) * len(keys)
    for pattern in (f"{namespace}:timers:*", f"{namespace}:outbox:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            total += int(client.memory_usage(key, samples=0) or 0)
    return len(keys), round(total / len(keys))


def _check(child: Child, run: ChildRun) -> None:
    if run.timed_out or run.returncode != 0:
        raise RuntimeError(
            f"{child.label} failed (exit {run.returncode}, timed out: "
            f"{run.timed_out}):\n{child.log_tail()}"
        )


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
