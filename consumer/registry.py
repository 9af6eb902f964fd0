"""Talk to a Confluent-compatible schema registry: ids to schemas and back.

Two routes of the Confluent REST API are used, which Confluent Schema Registry
serves at its root and Apicurio Registry under ``/apis/ccompat/v7``:

- ``GET /schemas/ids/{id}``: the writer schema of a record, by the id in its
  frame. A schema id never changes meaning, so each answer is cached for the
  life of the client and a consumer asks once per id.
- ``POST /subjects/{subject}/versions``: register a schema (or find the id of
  an identical one) under a subject. Subjects follow the TopicNameStrategy,
  ``<topic>-value``; see `value_subject`.

Failures are translated where httpx is called: a registry that does not
answer, or answers 5xx, is `RegistryUnavailable` (retry, never skip); an id it
does not know is `UnknownSchemaError`; a refusal that a retry will not change
(401, 403, an incompatible or malformed schema) is `ConfigError`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from consumer.errors import ConfigError, RegistryUnavailable, UnknownSchemaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def value_subject(topic: str) -> str:
    """Return the subject of a topic's values under the TopicNameStrategy."""
    return f"{topic}-value"


class RegistryClient:
    """A schema registry client with a per-id cache.

    The constructor does no I/O; the HTTP client opens on the first request
    and closes in `close` (or at the end of a ``with`` block). Credentials may
    ride in the URL (``https://user:secret@host``); they are sent as HTTP
    Basic auth and never appear in error messages.
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self._schemas: dict[int, Any] = {}
        self._registered: dict[tuple[str, str], int] = {}

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client; the next request opens a new one."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def get_schema(self, schema_id: int) -> Any:
        """Return the schema with this id as JSON data (a dict for a record).

        The answer is cached forever. Parsing it for fastavro is the codec's
        job, because the codec adjusts the schema before parsing.
        """
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        response = self._request("GET", f"/schemas/ids/{schema_id}")
        if response.status_code == 404:
            raise UnknownSchemaError(
                f"schema id {schema_id} is unknown to the registry"
            )
        self._raise_for_status(response, f"fetching schema id {schema_id}")
        try:
            schema = json.loads(response.json()["schema"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable(
                f"registry answered schema id {schema_id} with a body that "
                f"holds no schema: {response.text[:200]!r}"
            ) from exc
        self._schemas[schema_id] = schema
        return schema

    def register(self, subject: str, schema: Any) -> int:
        """Register a schema under a subject and return its id.

        Registering a schema the subject already holds is not an error: the
        registry answers with the existing id. The answer is cached per
        subject and schema text, so a producer asks once.
        """
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        cached = self._registered.get((subject, text))
        if cached is not None:
            return cached
        response = self._request(
            "POST",
            f"/subjects/{quote(subject, safe='')}/versions",
            content=json.dumps({"schema": text, "schemaType": "AVRO"}),
        )
        self._raise_for_status(response, f"registering a schema under {subject}")
        try:
            schema_id = int(response.json()["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable(
                f"registry answered the registration under {subject} without "
                f"an id: {response.text[:200]!r}"
            ) from exc
        self._registered[(subject, text)] = schema_id
        self._schemas.setdefault(schema_id, schema)
        return schema_id

    def _request(
        self, method: str, path: str, content: str | None = None
    ) -> httpx.Response:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self._url,
                timeout=self._timeout_s,
                headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE},
            )
        try:
            return self._client.request(method, path, content=content)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"schema registry did not answer {method} {path}: {type(exc).__name__}"
            ) from exc

    @staticmethod
    def _raise_for_status(response: httpx.Response, doing: str) -> None:
        status = response.status_code
        if status < 400:
            return
        body = response.text[:500]
        if status >= 500 or status == 429:
            raise RegistryUnavailable(
                f"schema registry failed {doing}: HTTP {status} {body}"
            )
        raise ConfigError(f"schema registry refused {doing}: HTTP {status} {body}")
