"""The benchmark runs end to end on a tiny workload (issue 9).

No assertion on speed: the numbers depend on the machine. The test proves
that every measurement happens, that the JSON holds every field with a sane
value, and that the run leaves no topic, group or Redis key behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import AdminClient

from tests.conftest import REDIS_URL

REPO = Path(__file__).resolve().parents[2]
THROUGHPUT_FIELDS = ("events_per_s", "cpu_s", "peak_rss_mb", "wall_s", "consume_s")


def positive(value: Any) -> bool:
    """Return True for a number above zero (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_tiny_benchmark_reports_every_measurement_and_cleans_up(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    """3,000 events for 500 contacts through the ceiling, the service, replay
    and both live runs: every field is present and positive, the table is
    printed, and nothing of the run is left in Kafka or Redis."""
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--events=3000",
            "--contacts=500",
            "--latency-events=200",
            "--latency-rate=100",
            "--crisp-contacts=10",
            "--crisp-rate=10",
            f"--bootstrap={kafka_bootstrap}",
            f"--redis-url={REDIS_URL}",
            f"--out={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    results = json.loads(out.read_text())

    assert results["workload"]["events"] == 3000
    assert 0 < results["workload"]["contacts"] <= 500
    for run in ("ceiling", "service", "replay"):
        for name in THROUGHPUT_FIELDS:
            assert positive(results[run][name]), (run, name, results[run][name])
        assert results[run]["returncode"] == 0
    service = results["service"]
    assert service["metrics"]["events_applied"] == 3000
    assert service["contacts_written"] == results["workload"]["contacts"]
    assert positive(service["ratio_to_ceiling"])
    assert positive(service["redis_bytes_per_contact"])
    assert positive(service["redis_sampled_bytes_per_contact"])
    assert all(positive(mb) for mb in service["rss_mb_at"].values())
    assert all(positive(mb) for mb in service["rss_peak_mb_halves"])
    assert all(positive(mb) for _, mb in service["rss_mb_series"])
    assert "0 would change stage" in results["replay"]["summary"]

    latency, crisp = results["latency"], results["crisp"]
    assert latency["seen"] == latency["samples"] == 100
    assert positive(latency["p50_ms"]) and latency["p99_ms"] >= latency["p50_ms"]
    assert crisp["synced"] == 10
    # The debounce holds every update back at least this long.
    assert crisp["p50_ms"] >= crisp["debounce_s"] * 1000
    assert crisp["p99_ms"] >= crisp["p50_ms"]

    assert [t["target"] for t in results["targets"]] == [
        "service >= 50% of the ceiling",
        "service >= 50,000 events/s",
        "replay >= service",
        "Redis <= 300 bytes per contact",
        "RSS flat (2nd-half peak <= 1st-half peak + 10%)",
    ]
    assert all(isinstance(t["met"], bool) for t in results["targets"])
    machine = results["machine"]
    assert positive(machine["cores"]) and positive(machine["memory_total_mb"])
    assert machine["python"].startswith("3.")
    assert "| service (run --until-caught-up) |" in done.stdout
    assert len(results["code"]["digest"]) == 16
    assert isinstance(results["code"]["changed_during_run"], bool)

    run_id = results["run_id"]
    topics = kafka_admin.list_topics(timeout=30).topics
    assert not [name for name in topics if run_id in name]
    groups = kafka_admin.list_consumer_groups(request_timeout=30).result()
    assert not [g.group_id for g in groups.valid if run_id in g.group_id]
    client = redis.Redis.from_url(REDIS_URL)
    assert not list(client.scan_iter(match=f"*{run_id}*", count=1000))
