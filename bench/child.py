"""Run one measured subprocess: CPU time, peak RSS, RSS over time, progress.

CPU seconds and peak RSS come from the kernel's accounting of that one
child: ``os.wait4`` returns its ``rusage`` (user plus system time, and
``ru_maxrss``, the high-water mark of its resident set) when it exits. RSS
over the run is sampled from ``/proc/<pid>/status`` (``VmRSS``) every
second. A progress callback (events processed so far, e.g. the offsets a
namespace stored in Redis) is polled every `PROGRESS_EVERY_S` seconds to
time the consuming window: from the first progress to the target.

A monitor thread does all of that, so the caller may produce or poll
meanwhile. Standard output and error go to files, never to a pipe that
nobody reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROGRESS_EVERY_S = 0.05
RSS_EVERY_S = 1.0


@dataclass
class ChildRun:
    """What one subprocess cost, and when it made progress.

    Times are seconds since the process was started; ``None`` when never
    reached.
    """

    label: str
    returncode: int | None = None
    wall_s: float = 0.0
    user_s: float = 0.0
    system_s: float = 0.0
    peak_rss_mb: float = 0.0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    first_progress_s: float | None = None
    done_s: float | None = None
    progress_at_first: int = 0
    timed_out: bool = False

    @property
    def cpu_s(self) -> float:
        """User plus system CPU seconds."""
        return self.user_s + self.system_s

    def rss_at(self, fraction: float) -> float | None:
        """Return the RSS sample nearest to a fraction of the run, in MB."""
        if not self.rss_mb:
            return None
        moment = fraction * self.wall_s
        return min(self.rss_mb, key=lambda sample: abs(sample[0] - moment))[1]

    def rss_peaks(self) -> tuple[float | None, float | None]:
        """Return the highest RSS sample of each half of the run, in MB."""
        middle = self.wall_s / 2
        first = [round(mb, 1) for moment, mb in self.rss_mb if moment <= middle]
        second = [round(mb, 1) for moment, mb in self.rss_mb if moment > middle]
        return max(first, default=None), max(second, default=None)

    def rss_series(self, points: int = 40) -> list[tuple[float, float]]:
        """Return at most ``points`` evenly spaced RSS samples (s, MB)."""
        step = max(len(self.rss_mb) // points, 1)
        series = self.rss_mb[::step]
        if self.rss_mb and series[-1] != self.rss_mb[-1]:
            series.append(self.rss_mb[-1])
        return series


class Child:
    """One subprocess under measurement."""

    def __init__(
        self,
        label: str,
        args: list[str],
        env: dict[str, str],
        workdir: Path,
        *,
        cwd: Path,
        progress: Callable[[], int] | None = None,
        target: int | None = None,
        every_second: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        self.args = args
        self.env = env
        self.cwd = cwd
        self.stdout_path = workdir / f"{label}.out"
        self.log_path = workdir / f"{label}.log"
        self.progress = progress
        self.target = target
        self.every_second = every_second
        self.result = ChildRun(label)
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._started = 0.0

    @property
    def pid(self) -> int:
        """The process id (the child must be started)."""
        assert self._process is not None
        return self._process.pid

    def start(self) -> Child:
        """Start the process and its monitor; return self."""
        with self.stdout_path.open("wb") as out, self.log_path.open("wb") as err:
            self._started = time.monotonic()
            self._process = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdout=out, stderr=err
            )
        self._thread = threading.Thread(
            target=self._monitor, name=f"monitor-{self.label}", daemon=True
        )
        self._thread.start()
        return self

    def wait(self, timeout_s: float) -> ChildRun:
        """Wait for the process to exit; kill it after ``timeout_s``."""
        assert self._thread is not None
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.result.timed_out = True
            self._signal(signal.SIGKILL)
            self._thread.join(30)
        return self.result

    def stop(self, timeout_s: float = 60.0) -> ChildRun:
        """Ask the process to drain and exit (SIGTERM), then wait."""
        self._signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def stdout(self) -> str:
        """Return what the process printed."""
        return self.stdout_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        """Return the end of what the process wrote to standard error."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def _signal(self, signum: int) -> None:
        if self._process is not None and self.result.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signum)

    def _monitor(self) -> None:
        assert self._process is not None
        pid = self._process.pid
        result = self.result
        next_rss = 0.0
        while True:
            waited, status, usage = os.wait4(pid, os.WNOHANG)
            now = time.monotonic() - self._started
            if waited:
                result.returncode = os.waitstatus_to_exitcode(status)
                self._process.returncode = result.returncode
                result.wall_s = now
                result.user_s = usage.ru_utime
                result.system_s = usage.ru_stime
                result.peak_rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
                self._check_progress(now)
                return
            if now >= next_rss:
                next_rss = now + RSS_EVERY_S
                rss = _rss_mb(pid)
                # Caught between fork and exec, the child has next to no
                # resident set: such a sample measures nothing.
                if rss is not None and round(rss, 1) > 0:
                    result.rss_mb.append((round(now, 2), round(rss, 1)))
                if self.every_second is not None:
                    self.every_second()
            self._check_progress(now)
            time.sleep(PROGRESS_EVERY_S)

    def _check_progress(self, now: float) -> None:
        result = self.result
        if self.progress is None or result.done_s is not None:
            return
        try:
            done = self.progress()
        except Exception:  # a progress probe must never end the measurement
            return
        if done > 0 and result.first_progress_s is None:
            result.first_progress_s = now
            result.progress_at_first = done
        if self.target is not None and done >= self.target:
            result.done_s = now


def _rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None
