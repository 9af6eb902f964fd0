"""The ceiling: read a topic from the start and only decode, no state.

Run as ``python -m bench.ceiling BOOTSTRAP TOPIC EVENTS [BATCH]``, in a
process of its own so that its CPU time and peak RSS are measured like the
service's. It assigns every partition at the beginning (no group, nothing
committed), consumes in batches like the service's poll loop, decodes each
value with `consumer.codec.EventCodec`, and stops once ``EVENTS`` values
are read. It prints one JSON object: the count, the wall-clock time of the
first and the last message, and the decode failures.
"""

from __future__ import annotations

import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumer.codec import EventCodec
from consumer.errors import RecordError

TIMEOUT_S = 600.0


def read(bootstrap: str, topic: str, events: int, batch: int) -> dict[str, float]:
    """Decode ``events`` values of ``topic``; return counts and times."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-ceiling-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
    )
    codec = EventCodec(None)
    decode = codec.decode
    read_count = failures = 0
    first_s = last_s = 0.0
    deadline = time.monotonic() + TIMEOUT_S
    while read_count < events and time.monotonic() < deadline:
        messages = consumer.consume(batch, timeout=0.5)
        if not messages:
            continue
        if not first_s:
            first_s = time.time()
        for message in messages:
            if message.error() is not None:
                continue
            try:
                decode(message.value())
            except RecordError:
                failures += 1
            read_count += 1
        last_s = time.time()
    consumer.close()
    return {
        "events": read_count,
        "failures": failures,
        "first_s": first_s,
        "last_s": last_s,
    }


def main(argv: list[str]) -> int:
    """Read, then print the result as JSON; exit 1 if not every event was read."""
    bootstrap, topic, events = argv[0], argv[1], int(argv[2])
    batch = int(argv[3]) if len(argv) > 3 else 2000
    result = read(bootstrap, topic, events, batch)
    print(json.dumps(result))
    return 0 if result["events"] >= events else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
