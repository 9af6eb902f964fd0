"""``crisp-lifecycle sandbox`` as a user runs it: a real process and a signal."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx


def test_sandbox_command_serves_and_stops_on_sigterm() -> None:
    """The command prints its URL and credentials, serves, and exits 0 on TERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer", "sandbox", "--port", "0", "--key", "k1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        lines = [process.stdout.readline().strip() for _ in range(4)]
        if not all("=" in line for line in lines):
            process.kill()
            raise AssertionError(f"no settings printed: {process.stderr.read()}")
        printed = dict(line.split("=", 1) for line in lines)
        base_url = printed["CRISP_BASE_URL"]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert printed["CRISP_KEY"] == "k1"

        answer = httpx.post(
            f"{base_url}/website/{printed['CRISP_WEBSITE_ID']}/people/profile",
            json={"email": "cli@example.com"},
            auth=(printed["CRISP_IDENTIFIER"], printed["CRISP_KEY"]),
            headers={"X-Crisp-Tier": "plugin"},
        )
        assert answer.status_code == 200

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
