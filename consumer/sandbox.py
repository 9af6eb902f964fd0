"""A local Crisp-compatible HTTP server: the project's own, for tests and demos.

It follows ``shared/CRISP_API.md`` for the routes the service uses, under
``/v1/website/{website_id}/``: ``POST people/profile``; ``HEAD``, ``GET``,
``PATCH`` and ``PUT people/profile/{people_id or email}``; ``GET``, ``PATCH``
and ``PUT people/data/{ref}``; ``POST people/events/{ref}``. Profiles live in
memory, keyed by a uuid4 people id, with an index by email. Answers use
Crisp's envelope ``{"error": ..., "reason": ..., "data": ...}``.

What it enforces, in this order: HTTP Basic credentials and the
``X-Crisp-Tier`` header (401), the website id (403 ``not_allowed``), the
daily quota (423 ``quota_limit_exceeded``), then the route's own rules: no
duplicate segments, custom data wrapped in ``"data"`` with flat scalar values,
no custom data on create, one event object, ``people_exists`` for a known
email. Where the contract is unconfirmed, the sandbox takes the strict reading.

Faults are switched on through ``POST /_sandbox/faults`` (or
`Sandbox.set_faults`) and touch ``/v1`` requests only; see `Faults`. Delays,
hangs, 429 bursts, HTML 502s and scripted failures come before any of the
checks above, as an edge proxy's would; ``quota_exhausted`` takes the quota's
place and ``not_found`` the profile lookup's. Every ``/v1`` request counts
against the daily quota, whatever its answer.

The control API under ``/_sandbox/`` needs no credentials: keep the sandbox on
loopback. ``GET profiles``, ``GET requests`` (counts per route and per day,
and the recent requests with method, path and status), ``GET faults``,
``POST faults`` (a JSON object of changes), ``POST reset``, and ``POST
profiles`` to seed a profile as a person or another tool would have.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import structlog

log = structlog.get_logger(__name__)

EVENT_COLORS = frozenset(
    {"red", "orange", "yellow", "green", "blue"}
    | {"purple", "pink", "brown", "grey", "black"}
)
_API_PATH = re.compile(
    r"^/v1/website/(?P<website>[^/]+)/people/(?P<kind>profile|data|events)"
    r"(?:/(?P<ref>[^/]+))?/?$"
)
_DATA_KEY = re.compile(r"^[a-z0-9_-]+$")
_HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)
#: (method, kind, has a ref) of every route the sandbox serves.
_ROUTES = frozenset(
    {
        ("POST", "profile", False),
        ("HEAD", "profile", True),
        ("GET", "profile", True),
        ("PATCH", "profile", True),
        ("PUT", "profile", True),
        ("GET", "data", True),
        ("PATCH", "data", True),
        ("PUT", "data", True),
        ("POST", "events", True),
    }
)


@dataclass
class Faults:
    """Switchable misbehaviour; counts go down by one per ``/v1`` request.

    ``rate_limit_burst`` answers the next N requests with
    ``rate_limit_status`` (429 or 420), with a ``Retry-After`` header when
    ``rate_limit_retry_after_s`` is set. ``html_5xx`` answers the next N with
    a 502 HTML page. ``fail_next`` is a queue of scripted answers, each
    ``{"status": int, "reason": str}``. ``quota_exhausted`` answers 423 until
    cleared. ``slow_s`` delays every answer; ``hang_s`` holds every request
    that long and then drops the connection without an answer.
    ``not_found`` makes every profile lookup ``people_not_found``.
    ``fail_duplicate_segments`` (on by default) refuses duplicate segments.
    """

    rate_limit_burst: int = 0
    rate_limit_status: int = 429
    rate_limit_retry_after_s: float | None = None
    html_5xx: int = 0
    fail_next: list[dict[str, Any]] = field(default_factory=list)
    quota_exhausted: bool = False
    slow_s: float = 0.0
    hang_s: float = 0.0
    not_found: bool = False
    fail_duplicate_segments: bool = True

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (JSON names); raise `ValueError` on a bad one."""
        for name, value in changes.items():
            switch = name in _SWITCHES and isinstance(value, bool)
            count = name in _COUNTS and type(value) is int and value >= 0
            if switch or count:
                setattr(self, name, value)
            elif name in _SECONDS and _is_number(value) and value >= 0:
                setattr(self, name, float(value))
            elif name == "rate_limit_status" and value in {420, 429}:
                self.rate_limit_status = value
            elif name == "rate_limit_retry_after_s" and (
                value is None or (_is_number(value) and value >= 0)
            ):
                self.rate_limit_retry_after_s = value
            elif name == "fail_next" and _is_script(value):
                self.fail_next.extend(value)
            else:
                raise ValueError(f"unknown fault or bad value: {name}={value!r}")


_SWITCHES = frozenset({"quota_exhausted", "not_found", "fail_duplicate_segments"})
_COUNTS = frozenset({"rate_limit_burst", "html_5xx"})
_SECONDS = frozenset({"slow_s", "hang_s"})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_script(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict)
        and type(item.get("status")) is int
        and isinstance(item.get("reason", ""), str)
        for item in value
    )


class _Refusal(Exception):
    """An error answer: HTTP status and Crisp reason (the message stays here)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.status = status
        self.reason = reason


def _invalid(why: str) -> _Refusal:
    return _Refusal(400, "invalid_data", why)


@dataclass
class _Plan:
    """What to do with one request before the route runs."""

    delay_s: float = 0.0
    hang_s: float = 0.0
    status: int = 0
    reason: str = ""
    html: bool = False
    retry_after_s: float | None = None


class Sandbox:
    """The in-memory Crisp: start it, point a client at `url`, stop it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        website_id: str = "sandbox-website",
        identifier: str = "sandbox",
        key: str = "sandbox-key",
        daily_quota: int | None = 5000,
    ) -> None:
        self.host = host
        self.port = port
        self.website_id = website_id
        self.identifier = identifier
        self.key = key
        self.daily_quota = daily_quota
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._profiles: dict[str, dict[str, Any]] = {}
        self._by_email: dict[str, str] = {}
        self._faults = Faults()
        self._by_route: Counter[str] = Counter()
        self._by_day: Counter[str] = Counter()
        self._recent: deque[dict[str, Any]] = deque(maxlen=500)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve in a background thread; return self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sandbox = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="crisp-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wake any request held by ``slow_s`` or ``hang_s``."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give a Crisp client, ending in ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def control_url(self) -> str:
        """The base URL of the control API."""
        return f"http://{self.host}:{self.port}/_sandbox"

    # -- control, from Python or over HTTP ------------------------------------

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Switch faults on or off; see `Faults`. Return them all."""
        with self._lock:
            self._faults.update(changes)
            return asdict(self._faults)

    def clear_faults(self) -> None:
        """Switch every fault off (duplicate segments stay refused)."""
        with self._lock:
            self._faults = Faults()

    def reset(self) -> None:
        """Forget profiles, counts and faults."""
        with self._lock:
            self._profiles.clear()
            self._by_email.clear()
            self._faults = Faults()
            self._by_route.clear()
            self._by_day.clear()
            self._recent.clear()

    def seed_profile(
        self,
        email: str | None = None,
        *,
        segments: list[str] | tuple[str, ...] = (),
        data: dict[str, Any] | None = None,
        people_id: str | None = None,
        nickname: str | None = None,
    ) -> dict[str, Any]:
        """Add a profile as a person or another tool would have; return it."""
        segments_list = _segments(list(segments), refuse_duplicates=True)
        data_map = _flat_map(data or {})
        with self._lock:
            if email and email.lower() in self._by_email:
                raise ValueError("a profile with that email exists")
            profile = self._new_profile(email, nickname, segments_list, people_id)
            profile["data"] = data_map
            return _full_view(profile)

    def profiles(self) -> list[dict[str, Any]]:
        """Return every profile with its segments and custom data."""
        with self._lock:
            return [_full_view(p) for p in self._profiles.values()]

    def profile(self, ref: str) -> dict[str, Any] | None:
        """Return one profile by people id or email, or None."""
        with self._lock:
            found = self._lookup(ref, honour_faults=False)
            return _full_view(found) if found else None

    def requests(self) -> dict[str, Any]:
        """Return request counts (total, today, per route) and recent ones."""
        with self._lock:
            return {
                "total": sum(self._by_route.values()),
                "today": self._by_day[_today()],
                "by_route": dict(self._by_route),
                "recent": list(self._recent),
            }

    def count(self, route: str) -> int:
        """Return how many requests hit ``route``, e.g. ``GET /people/profile/{id}``."""
        with self._lock:
            return self._by_route[route]

    def _control(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        action = (method, path.rstrip("/"))
        try:
            body = json.loads(raw) if raw.strip() else {}
            if action == ("GET", "/_sandbox/profiles"):
                return 200, self.profiles()
            if action == ("GET", "/_sandbox/requests"):
                return 200, self.requests()
            if action == ("GET", "/_sandbox/faults"):
                return 200, self.set_faults()
            if action == ("POST", "/_sandbox/faults"):
                if not isinstance(body, dict):
                    raise ValueError("faults are a JSON object")
                return 200, self.set_faults(**body)
            if action == ("POST", "/_sandbox/reset"):
                self.reset()
                return 200, {"reset": True}
            if action == ("POST", "/_sandbox/profiles"):
                if not isinstance(body, dict):
                    raise ValueError("a profile is a JSON object")
                return 200, self.seed_profile(**body)
        except (ValueError, TypeError, _Refusal) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": "no such control route"}

    # -- the Crisp API ---------------------------------------------------------

    def _admit(self, route: str) -> _Plan:
        """Count one ``/v1`` request and decide which fault, if any, hits it."""
        with self._lock:
            self._by_route[route] += 1
            self._by_day[_today()] += 1
            faults = self._faults
            plan = _Plan(delay_s=faults.slow_s, hang_s=faults.hang_s)
            if faults.html_5xx > 0:
                faults.html_5xx -= 1
                plan.status, plan.html = 502, True
            elif faults.rate_limit_burst > 0:
                faults.rate_limit_burst -= 1
                plan.status, plan.reason = faults.rate_limit_status, "rate_limited"
                plan.retry_after_s = faults.rate_limit_retry_after_s
            elif faults.fail_next:
                scripted = faults.fail_next.pop(0)
                plan.status = scripted["status"]
                plan.reason = scripted.get("reason", "scripted_failure")
            return plan

    def _api(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[int, str, Any]:
        """Run one Crisp request; return status, reason and data."""
        match = _API_PATH.match(path)
        with self._lock:
            if not self._authorised(headers):
                raise _Refusal(401, "unauthorized")
            if match is None:
                raise _Refusal(404, "not_found")
            if match["website"] != self.website_id:
                raise _Refusal(403, "not_allowed")
            over = self.daily_quota is not None and (
                self._by_day[_today()] > self.daily_quota
            )
            if self._faults.quota_exhausted or over:
                raise _Refusal(423, "quota_limit_exceeded")
            kind, ref = match["kind"], match["ref"]
            if (method, kind, ref is not None) not in _ROUTES:
                raise _Refusal(404, "not_found")
            body = _json_body(raw) if method in {"POST", "PATCH", "PUT"} else None
            if kind == "profile" and ref is None:
                return 200, "resolved", self._create(body)
            profile = self._lookup(ref, honour_faults=True)
            if profile is None:
                raise _Refusal(404, "people_not_found")
            return 200, "resolved", self._on_profile(method, kind, profile, body)

    def _authorised(self, headers: Any) -> bool:
        expected = base64.b64encode(f"{self.identifier}:{self.key}".encode()).decode()
        return headers.get("Authorization") == f"Basic {expected}" and headers.get(
            "X-Crisp-Tier"
        ) in {"plugin", "website"}

    def _create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("body must be an object")
        if "data" in body:
            raise _invalid("custom data cannot be sent on create")
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise _invalid("email required")
        person = body.get("person", {})
        if not isinstance(person, dict):
            raise _invalid("person must be an object")
        segments = _segments(body.get("segments", []), self._refuses_duplicates())
        if email.lower() in self._by_email:
            raise _Refusal(409, "people_exists")
        nickname = person.get("nickname")
        profile = self._new_profile(
            email, nickname if isinstance(nickname, str) else None, segments, None
        )
        return {"people_id": profile["people_id"]}

    def _on_profile(
        self, method: str, kind: str, profile: dict[str, Any], body: Any
    ) -> Any:
        if kind == "events":
            return self._add_event(profile, body)
        if kind == "data":
            if method == "GET":
                return {"data": dict(profile["data"])}
            if not isinstance(body, dict) or set(body) != {"data"}:
                raise _invalid("custom data must be wrapped in 'data'")
            values = _flat_map(body["data"])
            if method == "PUT":
                profile["data"] = values
            else:
                profile["data"].update(values)
            profile["updated_at"] = _now_ms()
            return {}
        if method in {"GET", "HEAD"}:
            return _public_view(profile)
        if not isinstance(body, dict) or not body:
            raise _invalid("profile update must be a non-empty object")
        if not set(body) <= {"email", "person", "segments", "active"}:
            raise _invalid("unknown profile fields")
        if method == "PUT":
            body = {"person": {}, "segments": [], **body}
            if "email" not in body:
                raise _invalid("replace needs the email")
        if "segments" in body:
            profile["segments"] = _segments(
                body["segments"], self._refuses_duplicates()
            )
        if "person" in body:
            if not isinstance(body["person"], dict):
                raise _invalid("person must be an object")
            profile["person"] = dict(body["person"])
        if "email" in body:
            self._change_email(profile, body["email"])
        profile["updated_at"] = _now_ms()
        return {}

    def _add_event(self, profile: dict[str, Any], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("one event object, never an array")
        text = body.get("text")
        color = body.get("color", "blue")
        if not isinstance(text, str) or not text or color not in EVENT_COLORS:
            raise _invalid("event needs text and a known color")
        event = {"text": text, "data": _flat_map(body.get("data", {})), "color": color}
        profile["events"].append(event)
        del profile["events"][:-100]  # Crisp keeps only recent events
        return {}

    def _change_email(self, profile: dict[str, Any], email: Any) -> None:
        if not isinstance(email, str) or "@" not in email:
            raise _invalid("email must be an address")
        owner = self._by_email.get(email.lower())
        if owner is not None and owner != profile["people_id"]:
            raise _Refusal(409, "people_exists")
        if profile["email"]:
            self._by_email.pop(profile["email"].lower(), None)
        profile["email"] = email
        self._by_email[email.lower()] = profile["people_id"]

    def _new_profile(
        self,
        email: str | None,
        nickname: str | None,
        segments: list[str],
        people_id: str | None,
    ) -> dict[str, Any]:
        people_id = people_id or str(uuid.uuid4())
        if people_id in self._profiles:
            raise ValueError("a profile with that people id exists")
        now = _now_ms()
        profile: dict[str, Any] = {
            "people_id": people_id,
            "email": email,
            "person": {"nickname": nickname or (email or "").split("@")[0]},
            "segments": segments,
            "data": {},
            "events": [],
            "active": False,
            "created_at": now,
            "updated_at": now,
        }
        self._profiles[people_id] = profile
        if email:
            self._by_email[email.lower()] = people_id
        return profile

    def _lookup(self, ref: str, *, honour_faults: bool) -> dict[str, Any] | None:
        if honour_faults and self._faults.not_found:
            return None
        key = unquote(ref)
        if key in self._profiles:
            return self._profiles[key]
        people_id = self._by_email.get(key.lower())
        return self._profiles.get(people_id) if people_id else None

    def _refuses_duplicates(self) -> bool:
        return self._faults.fail_duplicate_segments

    def _record(self, method: str, path: str, route: str, status: int) -> None:
        with self._lock:
            self._recent.append(
                {"method": method, "path": path, "route": route, "status": status}
            )
        log.debug("sandbox_request", method=method, route=route, status=status)


def _segments(value: Any, refuse_duplicates: bool) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item for item in value
    ):
        raise _invalid("segments must be a list of non-empty strings")
    if refuse_duplicates and len(set(value)) != len(value):
        raise _invalid("duplicate segments")
    return list(dict.fromkeys(value))


def _flat_map(value: Any) -> dict[str, str | int | float | bool]:
    if not isinstance(value, dict):
        raise _invalid("custom data must be an object")
    for key, item in value.items():
        if not _DATA_KEY.match(key):
            raise _invalid("custom data keys are lower-case, digits, _ and -")
        if item is None or not isinstance(item, str | int | float | bool):
            raise _invalid("custom data values are strings, numbers or booleans")
    return dict(value)


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _invalid("body is not JSON") from exc


def _public_view(profile: dict[str, Any]) -> dict[str, Any]:
    keys = ("people_id", "email", "person", "segments", "active")
    view = {key: profile[key] for key in keys}
    view["created_at"] = profile["created_at"]
    view["updated_at"] = profile["updated_at"]
    return json.loads(json.dumps(view))  # type: ignore[no-any-return]


def _full_view(profile: dict[str, Any]) -> dict[str, Any]:
    view = _public_view(profile)
    view["data"] = dict(profile["data"])
    view["events"] = [dict(event) for event in profile["events"]]
    return view


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _route_of(method: str, path: str) -> str:
    """Name the route of a request without the profile reference in it."""
    match = _API_PATH.match(path)
    if match is None:
        return f"{method} unknown"
    suffix = "/{id}" if match["ref"] else ""
    return f"{method} /people/{match['kind']}{suffix}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    sandbox: Sandbox


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crisp-sandbox"
    timeout = 30  # an idle keep-alive connection is closed after this
    # Headers and body go out in two writes: without this, Nagle's algorithm
    # and the client's delayed ACK add some 40 ms to every answer.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the sandbox counts requests instead of printing them."""

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        sandbox = cast(_Server, self.server).sandbox
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = urlsplit(self.path).path
        if path.startswith("/_sandbox/"):
            status, payload = sandbox._control(self.command, path, raw)
            self._send(status, json.dumps(payload).encode())
            return
        route = _route_of(self.command, path)
        plan = sandbox._admit(route)
        if plan.delay_s > 0:
            sandbox._stopping.wait(plan.delay_s)
        if plan.hang_s > 0:
            sandbox._stopping.wait(plan.hang_s)
            self.close_connection = True
            sandbox._record(self.command, self.path, route, 0)
            return
        status = self._answer(sandbox, plan, path, raw)
        sandbox._record(self.command, self.path, route, status)

    def _answer(self, sandbox: Sandbox, plan: _Plan, path: str, raw: bytes) -> int:
        if plan.html:
            self._send(502, _HTML_502, content_type="text/html")
            return 502
        extra: dict[str, str] = {}
        data: Any = {}
        if plan.status:
            status, reason = plan.status, plan.reason
            if plan.retry_after_s is not None:
                extra["Retry-After"] = f"{plan.retry_after_s:g}"
        else:
            try:
                status, reason, data = sandbox._api(
                    self.command, path, self.headers, raw
                )
                extra["Bloom-Status"] = "MISS"
            except _Refusal as refusal:
                status, reason = refusal.status, refusal.reason
        envelope = {"error": status >= 400, "reason": reason, "data": data}
        self._send(status, json.dumps(envelope).encode(), headers=extra)
        return status

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status, "Enhance Your Calm" if status == 420 else None)
        self.send_header("Content-Type", content_type)
        self.send_header(
            "Content-Length", "0" if self.command == "HEAD" else str(len(body))
        )
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
