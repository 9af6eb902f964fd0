"""``crisp-lifecycle sandbox``: run the local Crisp-compatible server.

It serves in the foreground until SIGTERM or SIGINT, and prints on standard
output the base URL and the throwaway credentials it accepts, as environment
assignments a shell or a compose file can use. See `consumer.sandbox`.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import threading
from types import FrameType
from typing import Any

import structlog

from consumer.sandbox import Sandbox

log = structlog.get_logger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``sandbox`` command."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run a local Crisp-compatible HTTP server with switchable faults",
        description=__doc__,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free one"
    )
    parser.add_argument("--website-id", default="sandbox-website")
    parser.add_argument("--identifier", default="sandbox")
    parser.add_argument("--key", default="sandbox-key")
    parser.add_argument(
        "--daily-quota",
        type=int,
        default=5000,
        help="requests a day before 423 quota_limit_exceeded; 0 for no quota",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until a signal asks to stop; return 0."""
    sandbox = Sandbox(
        args.host,
        args.port,
        website_id=args.website_id,
        identifier=args.identifier,
        key=args.key,
        daily_quota=args.daily_quota or None,
    )
    if not _is_loopback(args.host):
        log.warning("sandbox_not_on_loopback", host=args.host)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("sandbox_stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = {
        signum: signal.signal(signum, on_signal)
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    sandbox.start()
    try:
        # Throwaway local values, printed on purpose so a client can use them.
        print(f"CRISP_BASE_URL={sandbox.url}", flush=True)
        print(f"CRISP_WEBSITE_ID={sandbox.website_id}", flush=True)
        print(f"CRISP_IDENTIFIER={sandbox.identifier}", flush=True)
        print(f"CRISP_KEY={sandbox.key}", flush=True)
        log.info(
            "sandbox_started",
            url=sandbox.url,
            control_url=sandbox.control_url,
            website_id=sandbox.website_id,
            daily_quota=sandbox.daily_quota,
        )
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("sandbox_stopped")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
