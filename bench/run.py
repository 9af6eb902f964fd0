"""``python -m bench.run``: the ceiling, the service and replay, on one topic.

Usage::

    python -m bench.run [--events N] [--contacts M] [--out PATH]

It generates N events for M contacts (`bench.workload`), produces them once
to a topic of its own, then measures in turn, each in a subprocess:

1. the ceiling, a plain consumer that only decodes (`bench.ceiling`);
2. the service, ``crisp-lifecycle run --until-caught-up``, Crisp in dry
   run, into a fresh namespace and group (`bench.runs`);
3. ``crisp-lifecycle replay`` of the same topic beside it;
4. two small live runs on topics of their own: produce time to state
   written, and last event to Crisp profile with the sandbox (`bench.live`).

It prints a table and the targets of the benchmark issue, writes the JSON
(default ``bench/results/latest.json``), and deletes every topic, consumer
group and Redis key it made, also when a run fails. Kafka and Redis are the
local ones of ``make services-up`` unless ``--bootstrap`` and
``--redis-url`` (or ``KAFKA_BOOTSTRAP`` and ``REDIS_URL``) say otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import AdminClient

from bench import live, report, runs, workload
from bench.runs import Deployment
from consumer.logs import configure_logging
from consumer.store import Namespaces

DEFAULT_OUT = workload.REPO / "bench" / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Measure the service beside a decode-only ceiling and replay.",
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
    )
    parser.add_argument(
        "--latency-events", type=int, default=2000, help="events of the live run"
    )
    parser.add_argument(
        "--latency-rate", type=float, default=200.0, help="events/s of the live run"
    )
    parser.add_argument(
        "--crisp-contacts", type=int, default=300, help="contacts synced to Crisp"
    )
    parser.add_argument(
        "--crisp-rate", type=float, default=20.0, help="contacts/s of the Crisp run"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the subprocesses' logs (their directory is printed)",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.contacts < 1 or args.events < args.contacts // 10:
        parser.error("--events and --contacts must be positive, events not tiny")
    return args


class Bench:
    """One benchmark run: its names, what it created, and its clean-up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.admin = AdminClient({"bootstrap.servers": args.bootstrap})
        self.client = redis.Redis.from_url(args.redis_url)
        self.workdir = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
        self.topics: list[str] = []
        self.groups: list[str] = []
        self.namespaces: list[str] = []
        self.website_id = f"bench-{self.run_id}"
        #: The code's digest as each step started (see `step`).
        self.digests: list[str] = []

    def step(self, text: str) -> None:
        """Announce a step; note the code it will run.

        Each subprocess imports the package as it starts, so the digest
        taken just before it tells which version it measured.
        """
        _say(text)
        self.digests.append(report.code_digest(workload.REPO))

    def deployment(self, name: str, topic: str) -> Deployment:
        """Return a fresh group and namespace reading ``topic``."""
        group = f"bench-{name}-{self.run_id}"
        namespace = f"bench-{name}-{self.run_id}"
        self.groups.append(group)
        self.namespaces.append(namespace)
        return Deployment(
            bootstrap=self.args.bootstrap,
            redis_url=self.args.redis_url,
            topic=topic,
            transitions_topic=f"bench.transitions.{self.run_id}",
            dead_letter_topic=f"bench.dlq.{self.run_id}",
            group=group,
            namespace=namespace,
        )

    def topic(self, name: str) -> str:
        """Return the name of one of this run's topics."""
        return f"bench.{name}.{self.run_id}"

    def measure(self) -> dict[str, Any]:
        """Run every measurement; return the results."""
        args = self.args
        names = [self.topic(n) for n in ("events", "live", "crisp")]
        names += [f"bench.transitions.{self.run_id}", f"bench.dlq.{self.run_id}"]
        self.topics = names
        workload.create_topics(self.admin, names, args.partitions)
        events_topic, live_topic, crisp_topic = names[:3]
        timeout_s = 600 + args.events / 500
        results: dict[str, Any] = {
            "run_id": self.run_id,
            "code": report.code_version(workload.REPO),
            "machine": report.machine(self.client.info("server")),
        }

        self.step(f"producing {args.events:,} events for {args.contacts:,} contacts")
        produced = workload.produce(
            args.bootstrap,
            events_topic,
            workload.generate(args.events, args.contacts, seed=args.seed),
        )
        results["workload"] = _workload(produced, args.partitions)
        events, contacts = produced.events, produced.contacts

        self.step("ceiling: decoding only")
        results["ceiling"] = runs.measure_ceiling(
            args.bootstrap, events_topic, events, self.workdir, timeout_s
        )
        self.step("service: run --until-caught-up")
        service = self.deployment("service", events_topic)
        results["service"] = runs.measure_service(
            service, self.client, events, contacts, self.workdir, timeout_s
        )
        self.step("replay")
        into = f"{service.namespace}.replay"
        self.namespaces.append(into)
        results["replay"] = runs.measure_replay(
            service, self.client, events, into, self.workdir, timeout_s
        )
        self.step("live: produce -> state written")
        results["latency"] = live.measure_latency(
            self.deployment("live", live_topic),
            self.client,
            self.workdir,
            events=args.latency_events,
            rate_per_s=args.latency_rate,
            contacts=max(args.latency_events // 4, 1),
            partitions=args.partitions,
        )
        self.step("live: last event -> Crisp profile (sandbox)")
        results["crisp"] = live.measure_crisp(
            self.deployment("crisp", crisp_topic),
            self.client,
            self.workdir,
            contacts=args.crisp_contacts,
            rate_per_s=args.crisp_rate,
            partitions=args.partitions,
            website_id=self.website_id,
        )
        ceiling_rate = results["ceiling"]["events_per_s"]
        service_rate = results["service"]["events_per_s"]
        results["service"]["ratio_to_ceiling"] = (
            round(service_rate / ceiling_rate, 3)
            if service_rate and ceiling_rate
            else None
        )
        results["targets"] = report.targets(results)
        results["code"]["changed_during_run"] = len(set(self.digests)) > 1
        return results

    def clean_up(self) -> list[str]:
        """Delete this run's topics, groups and Redis keys; return problems."""
        problems = workload.delete_topics(self.admin, self.topics)
        if self.groups:
            futures = self.admin.delete_consumer_groups(self.groups)
            for group, future in futures.items():
                try:
                    future.result(timeout=30)
                except Exception as exc:  # a group that never formed
                    if "GROUP_ID_NOT_FOUND" not in str(exc):
                        problems.append(f"group {group}: {exc}")
        for namespace in self.namespaces:
            Namespaces(self.client, namespace).drop(namespace)
            self.client.delete(f"{namespace}:active", f"{namespace}:replay")
        budget = f"crisp-lifecycle:budget:{self.website_id}:*"
        for key in self.client.scan_iter(match=budget):
            self.client.delete(key)
        if self.args.keep_logs:
            _say(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return problems


def _workload(produced: workload.ProduceStats, partitions: int) -> dict[str, Any]:
    return {
        "events": produced.events,
        "contacts": produced.contacts,
        "partitions": partitions,
        "produce_s": round(produced.seconds, 2),
        "produce_events_per_s": round(produced.events / produced.seconds),
        "value_bytes_mean": round(produced.value_bytes / produced.events, 1),
        "mix": dict(produced.mix.most_common()),
    }


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON."""
    args = parse_args(argv)
    # The in-process sandbox logs every request at debug level.
    configure_logging("warning")
    bench = Bench(args)
    try:
        results = bench.measure()
    finally:
        problems = bench.clean_up()
        for problem in problems:
            _say(f"clean-up: {problem}")
    report.write_json(results, args.out)
    print(report.table(results))
    print()
    print(report.targets_table(results))
    print()
    print(f"machine: {report.machine_line(results['machine'])}")
    print(f"code: {report.code_line(results['code'])}")
    if results["code"]["changed_during_run"]:
        print("warning: consumer/ or plans/ changed between the runs, which")
        print("measured different versions of the code: run it again")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
