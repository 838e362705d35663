"""The bus's consumer adapts its fetch wait: 5 ms while caught up (latency), more while it
is behind and the broker answers its fetches empty (Tansu cannot gather a fetch from far
behind the end of a long partition within 5 ms on a loaded machine, and answers empty:
risk stayed 12,000 records behind at 4 records/s)."""

from __future__ import annotations

import pytest

from services.runtime.kafka import (
    FETCH_WAIT_MAX_MS,
    FETCH_WAIT_MS,
    FetchWait,
    KafkaBus,
    KafkaSettings,
)

pytestmark = pytest.mark.integration


def test_the_wait_doubles_while_behind_and_starved_and_returns_once_caught_up():
    wait = FetchWait()
    assert wait.ms == FETCH_WAIT_MS == 5
    wait.after(brought=False, behind=False)  # caught up and idle: as it was
    assert wait.ms == 5
    seen = []
    for _ in range(8):  # behind, and every fetch came back empty
        wait.after(brought=False, behind=True)
        seen.append(wait.ms)
    assert seen == [10, 20, 40, 80, 160, 200, 200, 200] and FETCH_WAIT_MAX_MS == 200
    wait.after(brought=True, behind=True)  # records come: the wait that brings them stays
    assert wait.ms == 200
    wait.after(brought=True, behind=False)
    assert wait.ms == 5


async def test_the_consumer_reads_its_backlog_and_its_fetch_wait_is_the_one_aiokafka_sends(broker):
    """On a real broker: a group consumer reads a backlog to its end; the wait it set is the
    attribute aiokafka's fetcher builds each fetch request from (aiokafka has no setter: an
    upgrade that renames it fails here, not silently in production)."""
    from schemas import RISK_IN, codec, topic_partitions
    from schemas.events import Deposit
    from services.runtime.kafka import set_fetch_wait

    bus = KafkaBus(KafkaSettings(broker, connect_timeout_s=10), topic_partitions(1))
    await bus.start()
    consumer = bus.consumer(RISK_IN, "perpsim-fetch-test")
    try:
        sent = [Deposit("client-a", seq, f"a{seq}", 1) for seq in range(1, 3001)]
        await bus.send([(RISK_IN, 0, None, codec(RISK_IN).encode(m)) for m in sent])
        got = []
        for _ in range(400):
            got += await consumer.getmany(timeout_ms=50, max_records=500)
            if len(got) == len(sent):
                break
        assert [r.offset for r in got] == list(range(len(sent)))  # all of it, in order, once
        for _ in range(3):  # caught up and idle: the wait is the caught-up one
            assert await consumer.getmany(timeout_ms=50) == []
        assert consumer.fetch_wait.ms == FETCH_WAIT_MS
        raw = consumer._consumer
        set_fetch_wait(raw, 123)
        assert raw._fetcher._fetch_max_wait_ms == 123
    finally:
        await consumer.stop()
        await bus.stop()
