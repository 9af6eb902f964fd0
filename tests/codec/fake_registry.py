"""A small schema registry on 127.0.0.1 that speaks the Confluent routes.

It serves what `consumer.registry` uses, with the status codes and bodies a
Confluent-compatible registry answers: ``GET /schemas/ids/{id}`` (404 with
error code 40403 for an unknown id) and ``POST /subjects/{subject}/versions``
(the same id again for a schema the registry already holds). Tests can make
it fail with a status of their choice and read how many requests it served.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_SCHEMA_BY_ID = re.compile(r"^/schemas/ids/(\d+)$")
_VERSIONS = re.compile(r"^/subjects/([^/]+)/versions$")


class FakeRegistry:
    """Schemas by id and subject, in memory; run it with `start`."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        #: When set, every request is answered with this status.
        self.fail_status: int | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeRegistry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry._serve(self, "GET")

            def do_POST(self) -> None:
                registry._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output clean."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever)
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def add(self, subject: str, schema: Any) -> int:
        """Register a schema directly; return its id."""
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        with self._lock:
            known = {text: schema_id for schema_id, text in self.schemas.items()}
            schema_id = known.get(text, len(self.schemas) + 1)
            self.schemas[schema_id] = text
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
        return schema_id

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.requests.append((method, handler.path))
        if self.fail_status is not None:
            self._answer(handler, self.fail_status, {"error_code": 50001})
            return
        if method == "GET" and (match := _SCHEMA_BY_ID.match(handler.path)):
            text = self.schemas.get(int(match.group(1)))
            if text is None:
                self._answer(
                    handler, 404, {"error_code": 40403, "message": "Schema not found"}
                )
            else:
                self._answer(handler, 200, {"schema": text})
            return
        if method == "POST" and (match := _VERSIONS.match(handler.path)):
            length = int(handler.headers.get("Content-Length", "0"))
            body = json.loads(handler.rfile.read(length))
            try:
                schema = json.loads(body["schema"])
            except (KeyError, ValueError):
                self._answer(handler, 422, {"error_code": 42201})
                return
            schema_id = self.add(unquote(match.group(1)), schema)
            self._answer(handler, 200, {"id": schema_id})
            return
        self._answer(handler, 404, {"error_code": 404, "message": "no such route"})

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", CONTENT_TYPE)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
