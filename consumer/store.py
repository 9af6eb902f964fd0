"""The Redis layout: every key of a namespace, and the scripts that write them.

Layout: one hash per contact, fenced by a revision
-----------------------------------------------------
DESIGN.md allows a hash tag per Kafka partition or one per contact. This
module keeps *everything* a contact needs in one hash, so that every atomic
step touches exactly one key. That works unchanged on Redis Cluster (a
one-key script is always within one slot), spreads contacts over every slot
instead of one slot per partition, and lets a batch that was interrupted
halfway simply be replayed:

* ``o`` holds the offset of the last event applied to the contact, so an
  event at or below it is skipped (effectively once after a crash);
* ``r`` is a revision that every writer compares and bumps, so a revoked
  (zombie) consumer or a concurrent relay can never overwrite newer state: a
  writer whose read is stale gets a conflict, reloads and reapplies.

Partition-wide indexes (due timers, due outbox entries) are derived data in
sorted sets of their own. They are written *before* the contact they point
to, so a crash between the two leaves a spurious entry, never a missing one;
whoever pops an entry re-reads the contact and drops entries that no longer
hold.

Keys, with ``P`` the namespace::

    P:c:<contact_id>           hash  the contact (fields below)
    P:timers:{<topic>:<p>}     zset  contact_id -> next engine check, ms
    P:outbox:{<topic>:<p>}     zset  contact_id -> next Crisp sync, ms
    P:parked                   zset  contact_id -> parked at, ms
    P:offsets                  hash  "<topic>:<p>" -> next offset to read

Contact fields: ``r`` revision, ``p`` partition, ``o`` last applied offset,
``s`` engine state (`consumer.engine.encode_state`), ``e`` email, ``i`` Crisp
people id, ``d`` desired Crisp state waiting to be sent (JSON), ``od`` its due
time, ``of`` when it first became pending, ``n`` failed attempts, ``x`` why it
is parked, ``l`` the state last sent to Crisp, ``L`` the same in dry run.
Emails are stored because Crisp finds profiles by them; they are never
logged.

Memory: the state and the Crisp JSON fields run to 100-150 bytes, past
Redis' default ``hash-max-listpack-value`` of 64, which turns each contact
hash into a hash table of about 650 bytes. With the setting at 512 (as
``deploy/local/redis.sh`` starts Redis) a contact takes about 350 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from consumer.errors import ConfigError, RedisUnavailable

_NO_VALUE = ""

# Read many contacts in one call when they share a slot (always, on a
# standalone server): one argument per contact instead of a dozen.
_READ_CONTACTS = """
local rows = {}
for i, key in ipairs(KEYS) do
  rows[i] = redis.call('HMGET', key, 'r', 'p', 'o', 's', 'e', 'i', 'd', 'of',
                       'l', 'L', 'x')
end
return rows
"""

# Write many contacts in one call when they share a slot. Per key two
# arguments: the engine state, and the rest as a JSON array
# [revision, partition, offset, email, pending, due, first pending].
_WRITE_CONTACTS = """
local written = {}
for i, key in ipairs(KEYS) do
  local meta = cjson.decode(ARGV[2 * i])
  local rev = tonumber(redis.call('HGET', key, 'r') or '0')
  if rev == meta[1] then
    redis.call('HSET', key, 'r', rev + 1, 's', ARGV[2 * i - 1],
               'p', meta[2], 'o', meta[3])
    if meta[4] ~= '' then redis.call('HSET', key, 'e', meta[4]) end
    if meta[5] ~= '' then
      redis.call('HSET', key, 'd', meta[5], 'od', meta[6], 'of', meta[7])
    end
    written[i] = 1
  else
    written[i] = 0
  end
end
return written
"""

# Finish a Crisp sync: record what was sent, clear the pending entry.
_FINISH_SYNC = """
local rev = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
if rev ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'r', rev + 1, ARGV[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[4]) end
redis.call('HDEL', KEYS[1], 'd', 'od', 'of', 'n', 'x')
return 1
"""

# Park a pending entry with its reason; the entry itself stays.
_PARK = """
local rev = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
if rev ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'r', rev + 1, 'x', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[3]) end
return 1
"""

# Remove an index member only if its score is still the one that was read.
_REMOVE_IF_SCORE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

# Raise a stored offset, never lower it (a zombie cannot move it back).
_RAISE_OFFSET = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw and ARGV[3] == '1' then return 0 end
if tonumber(ARGV[2]) > tonumber(raw or '-1') then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """A contact as read from Redis; revision 0 means it does not exist."""

    contact_id: str
    revision: int = 0
    partition: int | None = None
    offset: int = -1
    state: bytes | None = None
    email: str | None = None
    people_id: str | None = None
    pending: str | None = None
    pending_first_ms: int | None = None
    last_sent: str | None = None
    last_sent_dry_run: str | None = None
    parked: str | None = None


@dataclass(frozen=True, slots=True)
class ContactWrite:
    """The new state of one contact, to be written if nobody wrote since."""

    contact_id: str
    expected_revision: int
    state: bytes
    partition: int
    offset: int
    email: str | None = None
    pending: str | None = None
    pending_due_ms: int = 0
    pending_first_ms: int = 0
    next_due_ms: int | None = None
    had_timer: bool = False


class Store:
    """Read and write one namespace of contact state in Redis.

    Every method translates Redis connection failures into
    `RedisUnavailable`, which callers retry without skipping anything.
    """

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._cluster = isinstance(client, redis.RedisCluster)
        self._read_contacts = client.register_script(_READ_CONTACTS)
        self._write_contacts = client.register_script(_WRITE_CONTACTS)
        self._finish_sync = client.register_script(_FINISH_SYNC)
        self._park = client.register_script(_PARK)
        self._remove_if_score = client.register_script(_REMOVE_IF_SCORE)
        self._raise_offset = client.register_script(_RAISE_OFFSET)

    # -- key names ---------------------------------------------------------

    def contact_key(self, contact_id: str) -> str:
        """Return the key of a contact's hash."""
        return f"{self.namespace}:c:{contact_id}"

    def timers_key(self, topic: str, partition: int) -> str:
        """Return the key of a partition's timer index."""
        return f"{self.namespace}:timers:{{{topic}:{partition}}}"

    def outbox_key(self, topic: str, partition: int) -> str:
        """Return the key of a partition's outbox index."""
        return f"{self.namespace}:outbox:{{{topic}:{partition}}}"

    @property
    def parked_key(self) -> str:
        """Return the key of the parked-updates index."""
        return f"{self.namespace}:parked"

    @property
    def offsets_key(self) -> str:
        """Return the key of the stored partition offsets."""
        return f"{self.namespace}:offsets"

    # -- contacts ----------------------------------------------------------

    def load_contacts(self, contact_ids: Iterable[str]) -> dict[str, ContactRecord]:
        """Read many contacts in one round trip; absent ones have revision 0."""
        ids = list(contact_ids)
        if not ids:
            return {}
        keys = [self.contact_key(contact_id) for contact_id in ids]
        groups = self._slot_groups(keys)
        with _translated("load contacts"):
            try:
                results = self._read_grouped(keys, groups)
            except redis.exceptions.NoScriptError:
                self.client.script_load(_READ_CONTACTS)  # see _write_grouped
                results = self._read_grouped(keys, groups)
        rows: list[Any] = [None] * len(ids)
        for group, result in zip(groups, results, strict=True):
            for i, row in zip(group, result, strict=True):
                rows[i] = row
        return {
            contact_id: _record(contact_id, row)
            for contact_id, row in zip(ids, rows, strict=True)
        }

    def _read_grouped(self, keys: list[str], groups: list[list[int]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            self._read_contacts(keys=[keys[i] for i in group], client=pipe)
        return list(pipe.execute())

    def load_contact(self, contact_id: str) -> ContactRecord:
        """Read one contact."""
        return self.load_contacts([contact_id])[contact_id]

    def write_contacts(
        self, topic: str, writes: Sequence[ContactWrite]
    ) -> list[ContactWrite]:
        """Write contacts whose revision is unchanged; return the conflicts.

        Indexes first (a crash leaves spurious entries, never missing ones),
        then the contacts, then the removal of timers that no longer exist.
        """
        if not writes:
            return []
        with _translated("write contacts"):
            pipe = self.client.pipeline(transaction=False)
            for write in writes:
                if write.next_due_ms is not None:
                    key = self.timers_key(topic, write.partition)
                    pipe.zadd(key, {write.contact_id: write.next_due_ms})
                if write.pending is not None:
                    key = self.outbox_key(topic, write.partition)
                    pipe.zadd(key, {write.contact_id: write.pending_due_ms})
            if len(pipe):
                pipe.execute()
            written = self._write_grouped(writes)
            conflicts = [w for w, ok in zip(writes, written, strict=True) if not ok]
            stale_timers = [
                w
                for w, ok in zip(writes, written, strict=True)
                if ok and w.had_timer and w.next_due_ms is None
            ]
            if stale_timers:
                pipe = self.client.pipeline(transaction=False)
                for write in stale_timers:
                    key = self.timers_key(topic, write.partition)
                    pipe.zrem(key, write.contact_id)
                pipe.execute()
        return conflicts

    def _write_grouped(self, writes: Sequence[ContactWrite]) -> list[bool]:
        groups = self._slot_groups([self.contact_key(w.contact_id) for w in writes])
        try:
            results = self._send_writes(writes, groups)
        except redis.exceptions.NoScriptError:
            # A cluster pipeline sends EVALSHA without loading the script
            # first (a standalone pipeline loads it); a new or restarted
            # primary has none. Load it everywhere and send again: contacts
            # the first attempt wrote come back as conflicts, which the
            # processor reapplies from the offset they now hold.
            self.client.script_load(_WRITE_CONTACTS)
            results = self._send_writes(writes, groups)
        written = [False] * len(writes)
        for group, result in zip(groups, results, strict=True):
            for i, flag in zip(group, result, strict=True):
                written[i] = bool(flag)
        return written

    def _send_writes(
        self, writes: Sequence[ContactWrite], groups: list[list[int]]
    ) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            keys = [self.contact_key(writes[i].contact_id) for i in group]
            args: list[Any] = []
            for i in group:
                args.extend(_write_args(writes[i]))
            self._write_contacts(keys=keys, args=args, client=pipe)
        return list(pipe.execute())

    def _slot_groups(self, keys: Sequence[str]) -> list[list[int]]:
        """Group key positions by cluster slot (one group when standalone)."""
        if not self._cluster:
            return [list(range(len(keys)))]
        cluster: Any = self.client
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(cluster.keyslot(key), []).append(i)
        return list(groups.values())

    def scan_contacts(self, count: int = 1000) -> Iterator[ContactRecord]:
        """Yield every contact of the namespace (for reports and replays)."""
        pattern = f"{self.namespace}:c:*"
        prefix = len(self.contact_key(""))
        with _translated("scan contacts"):
            batch: list[str] = []
            for key in self.client.scan_iter(match=pattern, count=count):
                batch.append(_text(key)[prefix:])
                if len(batch) >= count:
                    yield from self.load_contacts(batch).values()
                    batch = []
            if batch:
                yield from self.load_contacts(batch).values()

    # -- offsets -------------------------------------------------------------

    def raise_offset(
        self, topic: str, partition: int, next_offset: int, *, kept: bool = False
    ) -> bool:
        """Record the next offset to read for a partition, if it is higher.

        With ``kept`` the caller knows the namespace held an offset for the
        partition; if it is gone (Redis lost its data), nothing is written
        and False comes back.
        """
        with _translated("store offset"):
            written: Any = self._raise_offset(
                keys=[self.offsets_key],
                args=[f"{topic}:{partition}", next_offset, "1" if kept else "0"],
            )
        return bool(int(written))

    def stored_offset(self, topic: str, partition: int) -> int | None:
        """Return the next offset to read that Redis holds, if any."""
        with _translated("read offset"):
            value = self.client.hget(self.offsets_key, f"{topic}:{partition}")
        return None if value is None else int(value)

    # -- timers and outbox indexes --------------------------------------------

    def due_members(
        self, key: str, now_ms: int, limit: int = 500
    ) -> list[tuple[str, int]]:
        """Return index members due at or before now, earliest first."""
        with _translated("read due index"):
            rows: Any = self.client.zrangebyscore(
                key, "-inf", now_ms, start=0, num=limit, withscores=True
            )
        return [(_text(member), int(score)) for member, score in rows]

    def reschedule(self, key: str, contact_id: str, due_ms: int) -> None:
        """Set an index member's due time."""
        with _translated("reschedule"):
            self.client.zadd(key, {contact_id: due_ms})

    def remove_if_unchanged(self, key: str, contact_id: str, score: int) -> None:
        """Drop an index member unless someone rescheduled it meanwhile."""
        with _translated("remove index member"):
            self._remove_if_score(keys=[key], args=[contact_id, score])

    def index_depth(self, keys: Iterable[str]) -> tuple[int, int | None]:
        """Return the number of members and the earliest score over indexes."""
        keys = list(keys)
        if not keys:
            return 0, None
        with _translated("measure index"):
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
            rows = pipe.execute()
        depth = sum(int(n) for n in rows[0::2])
        firsts = [int(first[0][1]) for first in rows[1::2] if first]
        return depth, min(firsts) if firsts else None

    # -- Crisp sync bookkeeping -------------------------------------------------

    def finish_sync(
        self,
        contact_id: str,
        expected_revision: int,
        sent_json: str,
        *,
        people_id: str | None,
        dry_run: bool,
    ) -> bool:
        """Record a successful sync; False if the contact changed meanwhile."""
        field = "L" if dry_run else "l"
        with _translated("finish sync"):
            done = self._finish_sync(
                keys=[self.contact_key(contact_id)],
                args=[expected_revision, field, sent_json, people_id or _NO_VALUE],
            )
        return bool(done)

    def park(
        self,
        contact_id: str,
        expected_revision: int,
        reason: str,
        now_ms: int,
        *,
        people_id: str | None = None,
    ) -> bool:
        """Set a pending update aside with its reason until an operator acts."""
        with _translated("park update"):
            done = self._park(
                keys=[self.contact_key(contact_id)],
                args=[expected_revision, reason, people_id or _NO_VALUE],
            )
            if done:
                self.client.zadd(self.parked_key, {contact_id: now_ms})
        return bool(done)

    def parked(self, limit: int = 1000) -> list[ContactRecord]:
        """Return parked contacts, oldest first."""
        with _translated("list parked"):
            members: Any = self.client.zrange(self.parked_key, 0, limit - 1)
        ids = [_text(member) for member in members]
        return list(self.load_contacts(ids).values())

    def unpark(self, record: ContactRecord, topic: str, now_ms: int) -> None:
        """Requeue a parked update for an immediate retry."""
        with _translated("requeue parked"):
            key = self.contact_key(record.contact_id)
            self.client.hdel(key, "x", "n")
            if record.partition is not None and record.pending is not None:
                self.client.zadd(
                    self.outbox_key(topic, record.partition),
                    {record.contact_id: now_ms},
                )
            self.client.zrem(self.parked_key, record.contact_id)

    def count_attempt(self, contact_id: str) -> int:
        """Count one more failed sync attempt and return the total."""
        with _translated("count attempt"):
            return int(self.client.hincrby(self.contact_key(contact_id), "n", 1))


class Namespaces:
    """Which namespace of a base name is active, and namespace clean-up.

    ``<base>:active`` names the namespace that live consumers read and
    write; without it the base name itself is active. A replay builds a new
    namespace beside it and switches this pointer in one ``SET``; its
    progress is recorded in ``<base>:replay`` so that a crashed replay can
    resume. Both keys sit under the base prefix but outside every data
    pattern, so dropping a namespace never touches them.
    """

    def __init__(self, client: redis.Redis, base: str) -> None:
        self.client = client
        self.base = base

    @property
    def pointer_key(self) -> str:
        """Return the key naming the active namespace."""
        return f"{self.base}:active"

    @property
    def replay_key(self) -> str:
        """Return the key of the replay in progress."""
        return f"{self.base}:replay"

    def active(self) -> str:
        """Return the active namespace."""
        with _translated("read active namespace"):
            value = self.client.get(self.pointer_key)
        return self.base if value is None else _text(value)

    def switch(self, namespace: str) -> str:
        """Make ``namespace`` active at once; return the one it replaces."""
        with _translated("switch namespace"):
            old: Any = self.client.set(self.pointer_key, namespace, get=True)
        return self.base if old is None else _text(old)

    def replay_in_progress(self) -> dict[str, str]:
        """Return the recorded replay (empty when none)."""
        with _translated("read replay"):
            raw: Any = self.client.hgetall(self.replay_key)
        return {_text(k): _text(v) for k, v in raw.items()}

    def record_replay(self, fields: dict[Any, Any]) -> None:
        """Record a replay so that a crashed one can resume."""
        with _translated("record replay"):
            self.client.hset(self.replay_key, mapping=fields)

    def finish_replay(self) -> None:
        """Forget the recorded replay."""
        with _translated("finish replay"):
            self.client.delete(self.replay_key)

    def drop(self, namespace: str) -> int:
        """Delete every data key of a namespace; return how many."""
        patterns = (
            f"{namespace}:c:*",
            f"{namespace}:timers:*",
            f"{namespace}:outbox:*",
        )
        deleted = 0
        with _translated("drop namespace"):
            for pattern in patterns:
                batch: list[bytes] = []
                for key in self.client.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        deleted += self._delete(batch)
                        batch = []
                deleted += self._delete(batch)
            deleted += self._delete(
                [f"{namespace}:parked".encode(), f"{namespace}:offsets".encode()]
            )
        return deleted

    def _delete(self, keys: list[bytes]) -> int:
        if not keys:
            return 0
        # One key per command: keys of different slots on a cluster.
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        return sum(int(n) for n in pipe.execute())


def _write_args(write: ContactWrite) -> tuple[bytes, str]:
    meta = [
        write.expected_revision,
        write.partition,
        write.offset,
        write.email or _NO_VALUE,
        write.pending if write.pending is not None else _NO_VALUE,
        write.pending_due_ms,
        write.pending_first_ms,
    ]
    return write.state, json.dumps(meta, separators=(",", ":"))


def _record(contact_id: str, row: list[bytes | None]) -> ContactRecord:
    rev, part, offset, state, email, people, pending, first, sent, dry, parked = row
    return ContactRecord(
        contact_id=contact_id,
        revision=int(rev) if rev is not None else 0,
        partition=int(part) if part is not None else None,
        offset=int(offset) if offset is not None else -1,
        state=state,
        email=_opt_text(email),
        people_id=_opt_text(people),
        pending=_opt_text(pending),
        pending_first_ms=int(first) if first is not None else None,
        last_sent=_opt_text(sent),
        last_sent_dry_run=_opt_text(dry),
        parked=_opt_text(parked),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _opt_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn Redis connection failures into `RedisUnavailable`, and refused
    credentials into `ConfigError`: waiting would not fix those."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise ConfigError(
            f"Redis refused the credentials during {action}: {exc}"
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(f"Redis unavailable during {action}: {exc}") from exc
    except (
        redis.exceptions.ClusterError,
        redis.exceptions.RedisClusterException,
    ) as exc:
        raise RedisUnavailable(
            f"Redis Cluster unavailable during {action}: {exc}"
        ) from exc


def connect(url: str) -> redis.Redis:
    """Return a client for a Redis URL.

    ``redis+cluster://host:port`` selects the cluster client, which reads
    the cluster's slots at once (an unreachable cluster is
    `RedisUnavailable`); a standalone client opens on its first command.
    """
    if url.startswith("redis+cluster://"):
        cluster_url = "redis://" + url[len("redis+cluster://") :]
        with _translated("connect to the cluster"):
            cluster = redis.RedisCluster.from_url(
                cluster_url, socket_timeout=10, socket_connect_timeout=5
            )
        return cluster  # type: ignore[return-value]
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
