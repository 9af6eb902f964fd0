"""Encode a contact's state into compact bytes and back.

Layout, version 1. A fixed-width head, then only varints (unsigned LEB128),
so that decoding is one tight loop; times are gaps, so they stay small::

    version (1 byte) | layout fingerprint (4 bytes)
    recent ids: count (1 byte) + 5 bytes each
    contact id: length (1 byte; 255 then 2 more bytes) + UTF-8
    varints:
        clock_ms
        first_ms: 0 = none, else 1 + (clock - first)
        due_ms: 0 = none, else 1 + zigzag(due - clock)
        per lifecycle (in layout order):
            history: count, then newest first (rule index, gap to the newer
                     move or to the clock); the current stage and its entry
                     time are the newest move's
            per "or beyond" slot: 0 = none, else 1 + (entered - since)
        trackers: a bit mask of those that differ from their initial value,
            then for each of them, by kind: count; window (count, gaps
            newest first from the clock); last (gap to the clock); total
            (number); buckets (count, then newest first: index gap, number)

A number is ``zigzag(n) << 2`` for an int, the same ``| 1`` for a float
with an integral value, or 2 followed by the 64 bits of a double.

The fingerprint names the compiled plan the state was made for
(`consumer.engine_compile.layout_for`); a state whose plan is not loaded in
this process cannot be decoded and raises `consumer.errors.PlanError`.
Damaged bytes raise `ValueError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from consumer.engine_compile import Compiled, compiled, layout_for
from consumer.engine_state import ContactState
from consumer.engine_trackers import BucketTracker
from consumer.errors import PlanError
from consumer.plan import Plan

STATE_VERSION = 1
_DOUBLE = struct.Struct("<d")
_BITS = struct.Struct("<Q")
_EXACT = 2**53
_UNBOUND = b"\0\0\0\0"


def encode_state(state: ContactState) -> bytes:
    """Return the compact, versioned bytes of a state."""
    layout = state.layout
    head = bytearray((STATE_VERSION,))
    head += layout.fingerprint if layout is not None else _UNBOUND
    head.append(len(state.recent) // 5)
    head += state.recent
    name = state.contact_id.encode()
    if len(name) < 255:
        head.append(len(name))
    elif len(name) < 65536:
        head.append(255)
        head += len(name).to_bytes(2, "big")
    else:
        raise ValueError("a contact id longer than 65535 bytes cannot be stored")
    head += name
    clock = state.clock_ms
    out = [
        clock,
        0 if state.first_ms is None else 1 + clock - state.first_ms,
        0 if state.due_ms is None else 1 + _zigzag(state.due_ms - clock),
    ]
    if layout is not None:
        _encode_body(out, state, layout, clock)
    _varints(head, out)
    return bytes(head)


def _encode_body(
    out: list[int], state: ContactState, layout: Compiled, clock: int
) -> None:
    append = out.append
    for index in range(len(layout.lifecycles)):
        history = state.history[index]
        append(len(history))
        newer = clock
        for rule_index, at_ms in reversed(history):
            append(rule_index)
            append(newer - at_ms)
            newer = at_ms
        entered = state.entered[index]
        for since in state.since[index]:
            append(0 if since is None else 1 + entered - since)
    mask = 0
    mask_at = len(out)
    append(0)
    blanks = layout.blank_values
    for slot, value in enumerate(state.values):
        blank = blanks[slot]
        # Values start as the very blank objects; most are still them.
        if value is blank or (value == blank and type(value) is type(blank)):
            continue
        mask |= 1 << slot
        tracker = layout.trackers[slot]
        kind = tracker.kind
        if kind == "count":
            append(value)
        elif kind == "window":
            append(len(value))
            newer = clock
            for at_ms in reversed(value):
                append(newer - at_ms)
                newer = at_ms
        elif kind == "last":
            append(clock - value)
        elif kind == "total":
            _number(out, value)
        else:
            assert isinstance(tracker, BucketTracker)
            append(len(value))
            newer = clock // tracker.bucket_ms
            for bucket, total in reversed(value):
                append(newer - bucket)
                _number(out, total)
                newer = bucket
    out[mask_at] = mask


def decode_state(data: bytes, plan: Plan | None = None) -> ContactState:
    """Rebuild a state from `encode_state` bytes.

    The plan that wrote it is found among the plans loaded or compiled in
    this process; pass ``plan`` to name it.
    """
    if len(data) < 7:
        raise ValueError("state is truncated")
    if data[0] != STATE_VERSION:
        raise ValueError(f"state version {data[0]} is not {STATE_VERSION}")
    fingerprint = bytes(data[1:5])
    count = data[5]
    position = 6 + 5 * count
    recent = bytes(data[6:position])
    if position >= len(data):
        raise ValueError("state is truncated")
    size = data[position]
    position += 1
    if size == 255:
        size = int.from_bytes(data[position : position + 2], "big")
        position += 2
    if position + size > len(data):
        raise ValueError("state is truncated")
    state = ContactState(data[position : position + size].decode())
    numbers = _read_varints(data, position + size)
    if len(numbers) < 3:
        raise ValueError("state is truncated")
    state.recent = recent
    clock = state.clock_ms = numbers[0]
    state.first_ms = None if numbers[1] == 0 else clock - (numbers[1] - 1)
    state.due_ms = None if numbers[2] == 0 else clock + _unzigzag(numbers[2] - 1)
    if fingerprint == _UNBOUND and len(numbers) == 3:
        return state
    layout = _layout(fingerprint, plan)
    state.bind(layout)
    try:
        rest = _decode_body(state, layout, clock, numbers)
    except (StopIteration, IndexError) as exc:
        raise ValueError("state is truncated") from exc
    if rest:
        raise ValueError("state has trailing bytes")
    return state


def _decode_body(
    state: ContactState, layout: Compiled, clock: int, numbers: list[int]
) -> bool:
    """Fill ``state`` from the varints; return whether any are left over."""
    take = iter(numbers[3:]).__next__
    for index, lifecycle in enumerate(layout.lifecycles):
        moves = []
        newer = clock
        for _ in range(take()):
            rule_index = take()
            if rule_index >= len(lifecycle.rules):
                raise ValueError(f"state names rule {rule_index} of {lifecycle.name}")
            newer -= take()
            moves.append((rule_index, newer))
        if moves:
            moves.reverse()
            state.history[index] = tuple(moves)
            state.stage[index] = lifecycle.rules[moves[-1][0]].to_stage
            state.entered[index] = moves[-1][1]
        if lifecycle.since_stages:
            entered = state.entered[index]
            state.since[index] = tuple(
                None if since == 0 else entered - (since - 1)
                for since in [take() for _ in lifecycle.since_stages]
            )
    mask = take()
    if mask >> len(layout.trackers):
        raise ValueError("state marks trackers this plan does not have")
    values = state.values
    trackers = layout.trackers
    while mask:
        lowest = mask & -mask
        mask ^= lowest
        slot = lowest.bit_length() - 1
        tracker = trackers[slot]
        kind = tracker.kind
        if kind == "count":
            values[slot] = take()
        elif kind == "window":
            times = []
            newer = clock
            for _ in range(take()):
                newer -= take()
                times.append(newer)
            times.reverse()
            values[slot] = tuple(times)
        elif kind == "last":
            values[slot] = clock - take()
        elif kind == "total":
            values[slot] = _read_number(take)
        else:
            assert isinstance(tracker, BucketTracker)
            buckets = []
            newer = clock // tracker.bucket_ms
            for _ in range(take()):
                newer -= take()
                buckets.append((newer, _read_number(take)))
            buckets.reverse()
            values[slot] = tuple(buckets)
    try:
        take()
    except StopIteration:
        return False
    return True


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


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


def _varints(out: bytearray, numbers: list[int]) -> None:
    append = out.append
    for value in numbers:
        if value < 0:
            raise ValueError(f"cannot encode {value} as an unsigned varint")
        while value > 0x7F:
            append((value & 0x7F) | 0x80)
            value >>= 7
        append(value)


def _read_varints(data: bytes, start: int) -> list[int]:
    numbers: list[int] = []
    append = numbers.append
    value = shift = 0
    for byte in data[start:]:
        if byte < 0x80:
            if shift:
                append(value | byte << shift)
                value = shift = 0
            else:
                append(byte)
        else:
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 70:
                raise ValueError("state holds an overlong varint")
    if shift:
        raise ValueError("state is truncated")
    return numbers


def _number(out: list[int], value: int | float) -> None:
    if isinstance(value, int):
        out.append(_zigzag(value) << 2)
    elif value.is_integer() and -_EXACT < value < _EXACT:
        out.append((_zigzag(int(value)) << 2) | 1)
    else:
        out.append(2)
        out.append(_BITS.unpack(_DOUBLE.pack(value))[0])


def _read_number(take: Callable[[], int]) -> int | float:
    raw = take()
    if raw == 2:
        value: float = _DOUBLE.unpack(_BITS.pack(take()))[0]
        return value
    number = _unzigzag(raw >> 2)
    return float(number) if raw & 1 else number
