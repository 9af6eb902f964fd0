"""Measure how many events per second `EventCodec.decode` reads.

Run ``python -m tests.codec.bench_decode [COUNT]`` (default 1,000,000). It
decodes a clickstream-like event written with the current schema (no schema
resolution) and one written with an older schema (resolved to the reader),
both in local-schema mode, and prints decodes per second for each. Not a
test: the numbers depend on the machine.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fastavro import parse_schema, schemaless_writer

from consumer.codec import EVENT_SCHEMA, EventCodec, frame, local_schema_id
from consumer.events import Event
from tests.codec.conftest import older_event_schema

EVENT = Event(
    event_id="9ff9a1a1f6cd678e16b8cf1ce525da87",
    contact_id="ecom-user_0539",
    name="Page:Viewed",
    occurred_at_ms=1_704_368_738_000,
    email=None,
    properties={
        "source_event": "home",
        "session_id": "sess_003228",
        "platform": "tablet",
        "acquisition_channel": "paid_search",
    },
)


def rate(codec: EventCodec, value: bytes, count: int) -> float:
    """Return decodes per second of one value, decoded ``count`` times."""
    decode = codec.decode
    start = time.perf_counter()
    for _ in range(count):
        decode(value)
    return count / (time.perf_counter() - start)


def main(count: int) -> None:
    old = older_event_schema()
    buffer = io.BytesIO()
    record = {k: v for k, v in EVENT.to_record().items() if k != "email"}
    schemaless_writer(buffer, parse_schema(old), record)
    older = frame(local_schema_id(old), buffer.getvalue())
    with tempfile.TemporaryDirectory() as directory:
        # The older writer must be known locally: keep it in history/.
        reader_path = Path(directory) / "event.avsc"
        shutil.copy(EVENT_SCHEMA, reader_path)
        (Path(directory) / "history").mkdir()
        (Path(directory) / "history" / "event.v0.avsc").write_text(json.dumps(old))
        codec = EventCodec(None, reader_path)
        current = codec.encode(EVENT)
        for label, value in (("same schema", current), ("older writer", older)):
            print(f"{label}: {rate(codec, value, count):,.0f} decodes/s ({count:,})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
