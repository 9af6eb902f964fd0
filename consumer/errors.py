"""The one error tree of crisp-lifecycle.

Every error the package raises on purpose derives from `LifecycleError`. The
branch tells the caller what to do with it::

    LifecycleError
    ├── RetryableError        try again later; never skip the record
    │   ├── KafkaUnavailable
    │   ├── RedisUnavailable
    │   ├── RegistryUnavailable
    │   └── CrispUnavailable  (429, 420, 422, 5xx, timeouts, HTML bodies)
    │       └── CrispQuotaExceeded   (423: pause until the quota resets)
    ├── RecordError           set the record aside (dead letter), keep going
    │   ├── DecodeError       bytes that are not a valid event
    │   │   ├── TombstoneRecord   a null value (reason tombstone)
    │   │   ├── RecordTooLarge    over the size limit (reason too_large)
    │   │   └── BadContactId      empty or over-long contact id
    │   ├── UnknownSchemaError
    │   ├── PlanViolation     an event the plan refuses
    │   └── CrispRejected     a 4xx Crisp will refuse again (parked)
    └── FatalError            stop: a person must fix something
        ├── ConfigError       bad settings or environment
        ├── PlanError         a tracking plan that does not load
        └── CrispAuthError    401 or 403 from Crisp

Library exceptions are translated where the library is called, with
``raise ... from exc``, and the evidence (topic, partition, offset, raw bytes,
HTTP status and body) travels in the error's attributes.
"""

from __future__ import annotations


class LifecycleError(Exception):
    """Root of every error raised on purpose by this package."""


class RetryableError(LifecycleError):
    """A dependency is unavailable for now; retry with backoff."""


class KafkaUnavailable(RetryableError):
    """The Kafka cluster did not answer or refused a request for now."""


class RedisUnavailable(RetryableError):
    """Redis did not answer; state was not written."""


class RegistryUnavailable(RetryableError):
    """The schema registry did not answer."""


class CrispUnavailable(RetryableError):
    """Crisp asked to slow down or failed on its side."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


class CrispQuotaExceeded(CrispUnavailable):
    """The daily request quota of the token is spent (HTTP 423)."""


class RecordError(LifecycleError):
    """One record cannot be processed; set it aside with the reason."""

    reason = "invalid"

    def __init__(self, message: str, *, raw: bytes | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class DecodeError(RecordError):
    """The bytes are not an event this service can read."""

    reason = "undecodable"


class UnknownSchemaError(RecordError):
    """The record names a writer schema id the registry does not know."""

    reason = "unknown_schema_id"


class PlanViolation(RecordError):
    """The event breaks the tracking plan and enforcement is dead_letter."""

    reason = "not_in_plan"


class CrispAnswer(LifecycleError):
    """Carries the HTTP status and body of the Crisp answer behind an error."""

    def __init__(
        self, message: str, *, status: int | None = None, body: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class CrispRejected(CrispAnswer, RecordError):
    """Crisp refused an update for a reason that a retry will not change."""

    reason = "crisp_rejected"


class TombstoneRecord(DecodeError):
    """The message has no value: a tombstone is never an event."""

    reason = "tombstone"


class RecordTooLarge(DecodeError):
    """The value is larger than the decoder accepts."""

    reason = "too_large"


class BadContactId(DecodeError):
    """The decoded contact id is empty or longer than the limit."""

    reason = "bad_contact_id"


class FatalError(LifecycleError):
    """Stop: the service cannot go on until a person fixes something."""


class ConfigError(FatalError):
    """A setting is missing or malformed."""


class StateLost(FatalError):
    """Redis lost a namespace's state under a running process."""


class PlanError(FatalError):
    """A tracking plan failed to load; the message names file and line."""


class CrispAuthError(CrispAnswer, FatalError):
    """Crisp refused the credentials (401) or the scope (403)."""
