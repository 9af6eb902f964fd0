"""The outbox relay: due Crisp updates out to Crisp, never on the poll loop.

The relay claims the due entries of the partitions its process owns (or of
every partition, when run alone as ``crisp-lifecycle sync``), sends each with
`consumer.crisp.CrispClient.sync_profile` on a small thread pool, and records
the result on the contact with a fenced write: an entry is removed only if
it did not change while it was being sent, so a newer change is never lost.

What happens to an entry, by what Crisp answered (CRISP_API.md's table):

* delivered (or nothing to do): the sent state is recorded, the entry goes;
* no email and no people id yet: the entry leaves the index but its desired
  state stays on the contact, and the consumer queues it again when an
  identity arrives;
* 429, 420, 5xx, timeouts, HTML, and 422 other than ``invalid_data``:
  rescheduled with backoff and jitter;
* 423, or the daily budget spent: the relay pauses; entries stay due;
* 400, 422 ``invalid_data`` and other refusals: parked with the reason
  (``outbox list --parked``); 401 and 403 also turn the health endpoint to
  failing.

Without Crisp credentials the relay runs dry: it logs what it would send and
records it as sent in a field of its own (``L``), so a later real run still
sends everything.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import structlog

from consumer import health as metrics
from consumer.crisp import CrispClient, ProfileTarget, SentState, SyncOutcome
from consumer.errors import (
    CrispAuthError,
    CrispQuotaExceeded,
    CrispRejected,
    CrispUnavailable,
    RetryableError,
)
from consumer.events import wall_clock_ms
from consumer.health import Health
from consumer.outbox import decode_desired
from consumer.plan import Plan
from consumer.ratelimit import RedisDailyCounter, RequestBudget, RetryPolicy
from consumer.settings import Settings
from consumer.store import ContactRecord, Store

log = structlog.get_logger("consumer.relay")

#: Entries claimed per partition and round.
CLAIM_LIMIT = 200
#: How often the relay looks for due entries when idle.
POLL_S = 0.25
#: Fenced writes retried when the consumer wrote the contact meanwhile.
FINISH_ATTEMPTS = 5


class Relay:
    """Send due outbox entries to Crisp (or log them, in dry run)."""

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        store: Store,
        health: Health,
        owned_partitions: Callable[[], frozenset[int]],
        *,
        client: CrispClient | None = None,
        retry: RetryPolicy | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.topic = settings.topic
        self.plan = plan
        self.store = store
        self.health = health
        self.owned_partitions = owned_partitions
        self.dry_run = client is None and not settings.crisp_configured
        self.client = client
        if client is None and settings.crisp_configured:
            # One daily count per Crisp website, shared by every process and
            # namespace that spends the same token's quota.
            counter = RedisDailyCounter(
                store.client, f"crisp-lifecycle:budget:{settings.crisp_website_id}"
            )
            budget = RequestBudget(
                settings.crisp_daily_budget, settings.crisp_max_rps, counter=counter
            )
            self.client = CrispClient.from_settings(settings, budget=budget)
        self.retry = retry or RetryPolicy(base_s=2.0, cap_s=600.0)
        self.quota_pause_s = settings.crisp_quota_pause_s
        self.clock_ms = clock_ms
        self._pool = ThreadPoolExecutor(
            max_workers=settings.crisp_concurrency, thread_name_prefix="relay"
        )
        self._paused_until_ms = 0
        self._busy = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Run the relay loop on a background thread."""
        log.info("relay_starting", dry_run=self.dry_run)
        self._thread = threading.Thread(target=self._loop, name="relay", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Finish the round in flight and stop."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.client is not None:
            self.client.close()

    def busy(self) -> bool:
        """Return True while a round is being sent."""
        return self._busy

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                handled = self.run_once()
            except RetryableError as exc:
                log.warning("relay_round_failed", error=str(exc))
                handled = 0
            except Exception:
                # A bug must not silently end the relay: say it, and go on.
                log.exception("relay_round_crashed")
                handled = 0
            if not handled:
                self._stopping.wait(POLL_S)

    # -- one round --------------------------------------------------------------

    def run_once(self) -> int:
        """Send every entry due now; return how many were handled."""
        now_ms = self.clock_ms()
        if now_ms < self._paused_until_ms:
            return 0
        claimed: list[tuple[str, str, int]] = []
        for partition in sorted(self.owned_partitions()):
            key = self.store.outbox_key(self.topic, partition)
            for contact_id, score in self.store.due_members(key, now_ms, CLAIM_LIMIT):
                claimed.append((key, contact_id, score))
        if not claimed:
            return 0
        self._busy = True
        try:
            records = self.store.load_contacts(contact for _, contact, _ in claimed)
            entries = [
                (key, records[contact], score) for key, contact, score in claimed
            ]
            if self.client is None:
                # Dry run: no request to wait on, so no thread is worth its GIL.
                for entry in entries:
                    self._handle(*entry)
                return len(claimed)
            futures = [self._pool.submit(self._handle, *entry) for entry in entries]
            wait(futures)
            for future in futures:
                error = future.exception()
                if error is not None and not isinstance(error, RetryableError):
                    log.error("relay_entry_failed", error=repr(error))
        finally:
            self._busy = False
            if self.client is not None and self.client.budget is not None:
                with contextlib.suppress(RetryableError):
                    metrics.QUOTA_USED.set(self.client.budget.used_today)
        return len(claimed)

    def _handle(self, key: str, record: ContactRecord, score: int) -> None:
        if self.clock_ms() < self._paused_until_ms:
            return
        contact_id = record.contact_id
        if record.pending is None or record.parked is not None:
            self.store.remove_if_unchanged(key, contact_id, score)
            return
        try:
            self._send(key, record, score)
        except CrispQuotaExceeded as exc:
            self._pause("crisp_quota_exhausted", str(exc), exc.retry_after_s)
        except CrispUnavailable as exc:
            attempts = self.store.count_attempt(contact_id)
            delay_s = self.retry.delay_s(attempts, retry_after_s=exc.retry_after_s)
            self.store.reschedule(
                key, contact_id, self.clock_ms() + int(delay_s * 1000)
            )
            metrics.CRISP_SYNCS.labels("retry").inc()
            log.warning(
                "crisp_update_retry",
                contact_id=contact_id,
                status=exc.status,
                reason=exc.reason,
                attempt=attempts,
                retry_in_s=round(delay_s, 1),
            )
        except CrispAuthError as exc:
            self.health.fail(f"Crisp refused the credentials ({exc.status})")
            self._park(key, record, score, f"auth {exc.status}: {exc.body}")
            self._pause("crisp_auth_refused", str(exc), None)
        except CrispRejected as exc:
            self._park(key, record, score, f"rejected {exc.status}: {exc.body}")
        except RetryableError:
            raise  # Redis: the entry stays due and the round is tried again
        except Exception as exc:
            # A bug or a value Crisp cannot take (an infinite sum): retrying
            # would spend the budget forever, so set it aside, visibly.
            log.exception("relay_entry_failed", contact_id=contact_id)
            self._park(key, record, score, f"failed: {exc!r}")

    def _send(self, key: str, record: ContactRecord, score: int) -> None:
        assert record.pending is not None
        desired = decode_desired(record.pending)
        last_raw = record.last_sent_dry_run if self.dry_run else record.last_sent
        last_sent = SentState.from_json(last_raw) if last_raw else None
        wanted = SentState.of(desired)
        people_id = record.people_id
        if self.client is None:
            if wanted != last_sent and people_id is None and record.email is None:
                # A real run could not address this profile yet: it waits on
                # the contact until an identity arrives, and so does this one.
                metrics.CRISP_SYNCS.labels(SyncOutcome.WAITING_FOR_IDENTITY.value).inc()
                self.store.remove_if_unchanged(key, record.contact_id, score)
                return
            if wanted != last_sent:
                log.info(
                    "crisp_update_dry_run",
                    contact_id=record.contact_id,
                    segments=list(wanted.segments),
                    data=dict(wanted.data),
                )
            metrics.CRISP_SYNCS.labels("dry_run").inc()
        else:
            result = self.client.sync_profile(
                ProfileTarget(email=record.email, people_id=record.people_id),
                desired,
                last_sent,
                self.plan.sync.managed_segments,
                self.plan.sync.create_profiles,
            )
            metrics.CRISP_SYNCS.labels(result.outcome.value).inc()
            if result.outcome is SyncOutcome.WAITING_FOR_IDENTITY:
                self.store.remove_if_unchanged(key, record.contact_id, score)
                return
            if result.outcome is SyncOutcome.NOT_FOUND:
                self._park(key, record, score, "people_not_found; creation is off")
                return
            people_id = result.people_id or people_id
            log.info(
                "crisp_update_sent",
                contact_id=record.contact_id,
                outcome=result.outcome.value,
                requests=result.requests,
            )
        self._finish(key, record, score, wanted.to_json(), people_id)

    def _finish(
        self,
        key: str,
        record: ContactRecord,
        score: int,
        sent_json: str,
        people_id: str | None,
    ) -> None:
        """Record the sync unless the desired state changed while sending."""
        pending = record.pending
        for _ in range(FINISH_ATTEMPTS):
            if self.store.finish_sync(
                record.contact_id,
                record.revision,
                sent_json,
                people_id=people_id,
                dry_run=self.dry_run,
            ):
                self.store.remove_if_unchanged(key, record.contact_id, score)
                return
            record = self.store.load_contact(record.contact_id)
            if record.pending != pending:
                return  # a newer change is queued under its own due time
        log.warning("crisp_update_unrecorded", contact_id=record.contact_id)

    def _park(self, key: str, record: ContactRecord, score: int, reason: str) -> None:
        metrics.CRISP_SYNCS.labels("parked").inc()
        log.error("crisp_update_parked", contact_id=record.contact_id, reason=reason)
        if self.store.park(
            record.contact_id, record.revision, reason[:500], self.clock_ms()
        ):
            self.store.remove_if_unchanged(key, record.contact_id, score)

    def _pause(self, event: str, detail: str, seconds: float | None) -> None:
        """Stop sending for a while; pending entries stay due.

        The local budget says when its day ends (``seconds``); Crisp's 423
        does not, so the configured quota pause applies.
        """
        pause_s = seconds if seconds is not None else self.quota_pause_s
        until = self.clock_ms() + int(pause_s * 1000)
        if until > self._paused_until_ms:
            self._paused_until_ms = until
            metrics.CRISP_SYNCS.labels("paused").inc()
            log.warning(event, pause_s=round(pause_s), detail=detail)
