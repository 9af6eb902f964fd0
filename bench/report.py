"""The benchmark's output: the machine, the targets, a table and the JSON.

The targets are those of the benchmark issue. "RSS flat" is read as: the
service's peak RSS in the second half of its run is at most `FLAT_GROWTH`
above its peak in the first half, which holds the warm-up (imports, the
plan, librdkafka's fetch buffers). Peaks, not single samples, so that a
momentary dip after a garbage collection does not decide it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka

SERVICE_SHARE_OF_CEILING = 0.5
SERVICE_MIN_EVENTS_PER_S = 50_000
REDIS_MAX_BYTES_PER_CONTACT = 300
FLAT_GROWTH = 0.10


def machine(redis_info: dict[str, Any]) -> dict[str, Any]:
    """Describe the machine and the software the numbers come from."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpuinfo("model name"),
        "memory_total_mb": _meminfo_mb("MemTotal"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": metadata.version("fastavro"),
        "redis_server": redis_info.get("redis_version"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def code_version(repo: Path) -> dict[str, Any]:
    """Identify the code measured: the commit, and a digest of what runs.

    The digest covers the package and the plans, committed or not, so that
    a run can tell whether they changed while it measured.
    """
    return {
        "commit": _git(repo, "rev-parse", "HEAD"),
        "uncommitted_changes": bool(
            _git(repo, "status", "--porcelain", "--", "consumer", "plans")
        ),
        "digest": code_digest(repo),
    }


def code_digest(repo: Path) -> str:
    """Return a short digest of the package's modules and the plans."""
    digest = hashlib.sha256()
    for path in sorted([*repo.glob("consumer/**/*.py"), *repo.glob("plans/*.yaml")]):
        digest.update(path.relative_to(repo).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Say where each target of the issue stands."""
    ceiling = results["ceiling"]["events_per_s"] or 0
    service = results["service"]
    service_rate = service["events_per_s"] or 0
    replay_rate = results["replay"]["events_per_s"] or 0
    ratio = service_rate / ceiling if ceiling else 0.0
    first, second = service["rss_peak_mb_halves"]
    growth = (second - first) / first if first and second else None
    per_contact = service["redis_bytes_per_contact"]
    return [
        _target(
            "service >= 50% of the ceiling",
            f"{ratio:.0%}",
            ratio >= SERVICE_SHARE_OF_CEILING,
        ),
        _target(
            "service >= 50,000 events/s",
            f"{service_rate:,} events/s",
            service_rate >= SERVICE_MIN_EVENTS_PER_S,
        ),
        _target(
            "replay >= service",
            f"{replay_rate:,} vs {service_rate:,} events/s",
            replay_rate >= service_rate > 0,
        ),
        _target(
            "Redis <= 300 bytes per contact",
            f"{per_contact} B (INFO), "
            f"{service['redis_sampled_bytes_per_contact']} B (MEMORY USAGE)",
            per_contact is not None and per_contact <= REDIS_MAX_BYTES_PER_CONTACT,
        ),
        _target(
            "RSS flat (2nd-half peak <= 1st-half peak + 10%)",
            f"{first} -> {second} MB"
            + (f" ({growth:+.0%})" if growth is not None else ""),
            growth is not None and growth <= FLAT_GROWTH,
        ),
    ]


def table(results: dict[str, Any]) -> str:
    """Return the results as a Markdown table, one row per measurement."""
    ceiling, service = results["ceiling"], results["service"]
    replay, latency, crisp = results["replay"], results["latency"], results["crisp"]
    rss = service["rss_mb_at"]
    ratio = (
        service["events_per_s"] / ceiling["events_per_s"]
        if service["events_per_s"] and ceiling["events_per_s"]
        else None
    )
    rows = [
        (
            "ceiling (decode only)",
            ceiling,
            f"{ceiling['events']:,} events in {ceiling['consume_s']} s",
        ),
        (
            "service (run --until-caught-up)",
            service,
            (f"{ratio:.0%} of ceiling; " if ratio is not None else "")
            + f"{service['consume_s']} s consuming, {service['wall_s']} s in all; "
            f"Redis {service['redis_bytes_per_contact']} B/contact; RSS "
            + "/".join(str(rss[k]) for k in ("25%", "50%", "75%", "100%"))
            + " MB at 25/50/75/100%",
        ),
        (
            "replay",
            replay,
            f"{replay['consume_s']} s building, {replay['wall_s']} s in all "
            "(second pass, compare, switch)",
        ),
        (
            "live: produce -> state written",
            {**latency["service"], "events_per_s": latency["rate_per_s"]},
            f"p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms "
            f"({latency['seen']} of {latency['samples']} samples; offered rate)",
        ),
        (
            "live: last event -> Crisp profile",
            {**crisp["service"], "events_per_s": None},
            f"p50 {_seconds(crisp['p50_ms'])}, p99 {_seconds(crisp['p99_ms'])} "
            f"({crisp['synced']} of {crisp['contacts']} contacts); "
            f"the {crisp['debounce_s']:g} s debounce dominates",
        ),
    ]
    lines = [
        "| measurement | events/s | CPU s | peak RSS MB | notes |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, row, notes in rows:
        rate = row.get("events_per_s")
        lines.append(
            f"| {name} | {f'{rate:,.0f}' if rate else '-'} | "
            f"{row['cpu_s']:.1f} | {row['peak_rss_mb']:.0f} | {notes} |"
        )
    return "\n".join(lines)


def targets_table(results: dict[str, Any]) -> str:
    """Return the targets as a Markdown table."""
    lines = ["| target | measured | met |", "| --- | --- | --- |"]
    for item in results["targets"]:
        met = "yes" if item["met"] else "**no**"
        lines.append(f"| {item['target']} | {item['measured']} | {met} |")
    return "\n".join(lines)


def code_line(code: dict[str, Any]) -> str:
    """Describe the code measured in one line."""
    commit = (code["commit"] or "unknown")[:10]
    dirty = " with uncommitted changes" if code["uncommitted_changes"] else ""
    return f"commit {commit}{dirty} (consumer/ and plans/ digest {code['digest']})"


def machine_line(info: dict[str, Any]) -> str:
    """Describe the machine in one line."""
    return (
        f"{info['cores']} cores ({info['cpu_model']}), "
        f"{info['memory_total_mb'] / 1024:.1f} GB, Linux {info['kernel']}, "
        f"Python {info['python']}, librdkafka {info['librdkafka']}, "
        f"Redis {info['redis_server']}; broker and Redis on the same machine; "
        f"{info['date']}"
    )


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results atomically (a ``.tmp`` file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    os.replace(partial, path)


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _target(name: str, measured: str, met: bool) -> dict[str, Any]:
    return {"target": name, "measured": measured, "met": bool(met)}


def _seconds(milliseconds: float | None) -> str:
    return "-" if milliseconds is None else f"{milliseconds / 1000:.2f} s"


def _cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _meminfo_mb(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None
