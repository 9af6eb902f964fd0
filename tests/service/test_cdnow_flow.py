"""The main job on real data (issue 6): CDNOW purchases to Crisp profiles.

The flow of ``make demo`` on the CDNOW sample: the ``produce`` command with
the shipped mapping, the consumer until caught up, the relay to the sandbox.
Stage counts are checked against a plain computation from the raw file, and
every profile against the segment its contact's stage calls for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from consumer.sandbox import Sandbox
from tests.service.conftest import MakeEnv
from tests.service.harness import REPO

CDNOW = REPO / "tests" / "data" / "cdnow_sample.txt"


def stages_from_raw_file(path: Path) -> dict[str, str]:
    """Each buyer's stage, computed from the file without the engine.

    A buyer with a purchase over $0 is a customer; with two purchases or
    more (of any amount) and, the data being decades old, more than 30 days
    since, a retained customer. Buyers of only $0 purchases have no stage.
    """
    purchases: Counter[str] = Counter()
    paid: set[str] = set()
    for line in path.read_text().splitlines():
        customer, _sample, _date, _quantity, amount = line.split()
        purchases[customer] += 1
        if float(amount) > 0:
            paid.add(customer)
    return {
        f"cdnow-{customer}": "retained_customer"
        if purchases[customer] >= 2
        else "customer"
        for customer in paid
    }


def test_cdnow_purchases_reach_crisp_with_the_right_segments(
    make_env: MakeEnv,
) -> None:
    """Counts per stage equal the raw file's; each profile holds its stage."""
    expected = stages_from_raw_file(CDNOW)
    with Sandbox(daily_quota=None) as sandbox:
        env = make_env(
            extra={
                "CRISP_BASE_URL": sandbox.url,
                "CRISP_WEBSITE_ID": sandbox.website_id,
                "CRISP_IDENTIFIER": "sandbox",
                "CRISP_KEY": "sandbox-key",
                "CRISP_MAX_RPS": "1000",
                "CRISP_DAILY_BUDGET": "10000000",
                "CRISP_CONCURRENCY": "8",
            }
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "consumer",
                "produce",
                str(CDNOW),
                "--mapping",
                "mappings/cdnow.yaml",
                "--email-template",
                "{contact_id}@demo.invalid",
            ],
            env=env.environ(),
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        env.run_until_caught_up(timeout_s=300)
        report = subprocess.run(
            [sys.executable, "-m", "consumer", "report", "--json"],
            env=env.environ(),
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        profiles = {p["email"]: p for p in sandbox.profiles()}

    counts = json.loads(report.stdout)["lifecycles"]["customer"]
    wanted = Counter(expected.values())
    assert counts["customer"] == wanted["customer"]
    assert counts["retained_customer"] == wanted["retained_customer"]
    assert sum(counts.values()) == len(expected)
    assert len(profiles) == len(expected)
    for contact_id, stage in expected.items():
        profile = profiles[f"{contact_id}@demo.invalid"]
        assert profile["segments"] == [f"lifecycle:{stage}"], contact_id
        assert profile["data"]["lifecycle_stage"] == stage
