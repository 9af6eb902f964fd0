"""Encode a contact's state into compact bytes and back.

Layout, version 1 (varint: unsigned LEB128; times as gaps, so small)::

    version (1 byte) | layout fingerprint (4 bytes)
    contact id: varint length + UTF-8
    clock_ms: varint
    first_ms: varint, 0 = none, else 1 + (clock - first)
    due_ms: varint, 0 = none, else 1 + zigzag(due - clock)
    recent ids: varint count + 5 bytes each
    per lifecycle (in layout order):
        history: varint count, then newest first (rule index, gap to the
                 newer move or to the clock); the current stage and its
                 entry time are the newest move's
        per "or beyond" slot: varint, 0 = none, else 1 + (entered - since)
    trackers: a bitmap of those that differ from their initial value, then
        for each of them, by kind: count (varint); window (count, gaps newest
        first from the clock); last (gap to the clock); total (number);
        buckets (count, then newest first: index gap, number)

A number is a varint ``zigzag(n) << 2`` for an int, ``| 1`` for a float with
an integral value, or the byte 2 and a little-endian double.

The fingerprint names the compiled plan the state was made for
(`consumer.engine_compile.layout_for`); a state whose plan is not loaded in
this process cannot be decoded and raises `consumer.errors.PlanError`.
Damaged bytes raise `ValueError`.
"""

from __future__ import annotations

import struct
from typing import Any

from consumer.engine_compile import Compiled, compiled, layout_for
from consumer.engine_state import ContactState
from consumer.engine_trackers import (
    BucketTracker,
    CountTracker,
    LastTracker,
    TotalTracker,
    WindowTracker,
)
from consumer.errors import PlanError
from consumer.plan import Plan

STATE_VERSION = 1
_DOUBLE = struct.Struct("<d")
_EXACT = 2**53


def encode_state(state: ContactState) -> bytes:
    """Return the compact, versioned bytes of a state."""
    layout = state.layout
    out = bytearray((STATE_VERSION,))
    out += layout.fingerprint if layout is not None else b"\0\0\0\0"
    name = state.contact_id.encode()
    _uint(out, len(name))
    out += name
    clock = state.clock_ms
    _uint(out, clock)
    _uint(out, 0 if state.first_ms is None else 1 + clock - state.first_ms)
    _uint(out, 0 if state.due_ms is None else 1 + _zigzag(state.due_ms - clock))
    _uint(out, len(state.recent))
    for key in state.recent:
        out += key.to_bytes(5, "big")
    if layout is None:
        return bytes(out)
    for index in range(len(layout.lifecycles)):
        history = state.history[index]
        _uint(out, len(history))
        newer = clock
        for rule_index, at_ms in reversed(history):
            _uint(out, rule_index)
            _uint(out, newer - at_ms)
            newer = at_ms
        entered = state.entered[index]
        for since in state.since[index]:
            _uint(out, 0 if since is None else 1 + entered - since)
    values = state.values
    bitmap = bytearray((len(layout.trackers) + 7) // 8)
    body = bytearray()
    for slot, tracker in enumerate(layout.trackers):
        value = values[slot]
        if value == tracker.initial() and type(value) is type(tracker.initial()):
            continue
        bitmap[slot // 8] |= 1 << (slot % 8)
        _value(body, tracker, value, clock)
    out += bitmap
    out += body
    return bytes(out)


def _value(out: bytearray, tracker: Any, value: Any, clock: int) -> None:
    if isinstance(tracker, CountTracker):
        _uint(out, value)
    elif isinstance(tracker, WindowTracker):
        _uint(out, len(value))
        newer = clock
        for at_ms in reversed(value):
            _uint(out, newer - at_ms)
            newer = at_ms
    elif isinstance(tracker, LastTracker):
        _uint(out, clock - value)
    elif isinstance(tracker, TotalTracker):
        _number(out, value)
    else:
        assert isinstance(tracker, BucketTracker)
        _uint(out, len(value))
        newer = clock // tracker.bucket_ms
        for bucket, total in reversed(value):
            _uint(out, newer - bucket)
            _number(out, total)
            newer = bucket


def decode_state(data: bytes, plan: Plan | None = None) -> ContactState:
    """Rebuild a state from `encode_state` bytes.

    The plan that wrote it is found among the plans loaded or compiled in
    this process; pass ``plan`` to name it.
    """
    reader = _Reader(data)
    version = reader.byte()
    if version != STATE_VERSION:
        raise ValueError(f"state version {version} is not {STATE_VERSION}")
    fingerprint = reader.take(4)
    state = ContactState(reader.take(reader.uint()).decode())
    clock = reader.uint()
    state.clock_ms = clock
    first = reader.uint()
    state.first_ms = None if first == 0 else clock - (first - 1)
    due = reader.uint()
    state.due_ms = None if due == 0 else clock + _unzigzag(due - 1)
    state.recent = tuple(
        int.from_bytes(reader.take(5), "big") for _ in range(reader.uint())
    )
    if reader.done() and fingerprint == b"\0\0\0\0":
        return state
    layout = _layout(fingerprint, plan)
    state.bind(layout)
    for index, lifecycle in enumerate(layout.lifecycles):
        moves = []
        newer = clock
        for _ in range(reader.uint()):
            rule_index = reader.uint()
            if rule_index >= len(lifecycle.rules):
                raise ValueError(f"state names rule {rule_index} of {lifecycle.name}")
            newer -= reader.uint()
            moves.append((rule_index, newer))
        moves.reverse()
        state.history[index] = tuple(moves)
        if moves:
            state.stage[index] = lifecycle.rules[moves[-1][0]].to_stage
            state.entered[index] = moves[-1][1]
        entered = state.entered[index]
        slots = []
        for _ in lifecycle.since_stages:
            since = reader.uint()
            slots.append(None if since == 0 else entered - (since - 1))
        state.since[index] = tuple(slots)
    bitmap = reader.take((len(layout.trackers) + 7) // 8)
    for slot, tracker in enumerate(layout.trackers):
        if bitmap[slot // 8] & (1 << (slot % 8)):
            state.values[slot] = _read_value(reader, tracker, clock)
    if not reader.done():
        raise ValueError("state has trailing bytes")
    return state


def _layout(fingerprint: bytes, plan: Plan | None) -> Compiled:
    if plan is not None and compiled(plan).fingerprint == fingerprint:
        return compiled(plan)
    found = layout_for(fingerprint)
    if found is None:
        raise PlanError(
            f"a contact state was written under plan layout {fingerprint.hex()}, "
            "which this process has not loaded; load that plan, or rebuild the "
            "state by replaying the topic into a fresh namespace"
        )
    return found


def _read_value(reader: _Reader, tracker: Any, clock: int) -> Any:
    if isinstance(tracker, CountTracker):
        return reader.uint()
    if isinstance(tracker, WindowTracker):
        times = []
        newer = clock
        for _ in range(reader.uint()):
            newer -= reader.uint()
            times.append(newer)
        return tuple(reversed(times))
    if isinstance(tracker, LastTracker):
        return clock - reader.uint()
    if isinstance(tracker, TotalTracker):
        return reader.number()
    assert isinstance(tracker, BucketTracker)
    buckets = []
    newer = clock // tracker.bucket_ms
    for _ in range(reader.uint()):
        newer -= reader.uint()
        buckets.append((newer, reader.number()))
    return tuple(reversed(buckets))


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


def _uint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"cannot encode {value} as an unsigned varint")
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _number(out: bytearray, value: int | float) -> None:
    if isinstance(value, int):
        _uint(out, _zigzag(value) << 2)
    elif value.is_integer() and -_EXACT < value < _EXACT:
        _uint(out, (_zigzag(int(value)) << 2) | 1)
    else:
        out.append(2)
        out += _DOUBLE.pack(value)


class _Reader:
    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def done(self) -> bool:
        return self.position == len(self.data)

    def byte(self) -> int:
        if self.position >= len(self.data):
            raise ValueError("state is truncated")
        value = self.data[self.position]
        self.position += 1
        return value

    def take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise ValueError("state is truncated")
        chunk = self.data[self.position : end]
        self.position = end
        return bytes(chunk)

    def uint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 70:
                raise ValueError("state holds an overlong varint")

    def number(self) -> int | float:
        if self.position < len(self.data) and self.data[self.position] == 2:
            self.position += 1
            value: float = _DOUBLE.unpack(self.take(8))[0]
            return value
        raw = self.uint()
        number = _unzigzag(raw >> 2)
        return float(number) if raw & 1 else number
