"""Engine snapshots (schemas.state): an engine restored from its encoded snapshot goes on
exactly as the one it was taken from: the same events, numbered the same, and the same
state, on random streams that trade, liquidate and settle."""

from __future__ import annotations

import random

import msgspec
import pytest

from exchange.core import CoreExchange
from schemas.state import (
    STATE_VERSION,
    LiquidationState,
    MarketState,
    RiskState,
    Snapshot,
    StateError,
    decode_snapshot,
    encode_snapshot,
)
from tests.test_risk_properties import (
    ACCOUNTS,
    MARKETS,
    MID,
    _mark,
    act,
    markets,
    random_step,
)


def restored(ex: CoreExchange) -> CoreExchange:
    """A new exchange whose engines are loaded from ``ex``'s snapshots, each through the
    wire format (encoded and decoded, as they travel on the bus)."""
    def through_wire(state, kind):
        return msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=kind)

    copy = CoreExchange(markets())
    copy.risk.load(through_wire(ex.risk.export(), RiskState))
    for symbol, engine in ex.matching.items():
        copy.matching[symbol].load(through_wire(engine.export(), MarketState))
    copy.liquidation.load(through_wire(ex.liquidation.export(), LiquidationState))
    copy.seq, copy.ts = ex.seq, ex.ts
    return copy


def exports(ex: CoreExchange) -> bytes:
    return msgspec.msgpack.encode([ex.risk.export(), [e.export() for e in ex.matching.values()],
                                   ex.liquidation.export()])


@pytest.mark.parametrize("seed", [3, 17, 424242])
def test_a_restored_exchange_emits_what_the_original_does(seed):
    rng = random.Random(seed)
    ex = CoreExchange(markets())
    ex.deposit("insurance", "100000")
    for account in ACCOUNTS:
        ex.deposit(account, str(rng.randint(100, 5000)))
    for market in MARKETS:
        ex.submit(_mark(ex, market, MID[market]))
    copy = None
    checked = 0
    for step in range(900):
        if step in (300, 600):  # restore twice: a restored engine can be snapshotted again
            copy = restored(ex if copy is None else copy)
        action = random_step(rng, ex, step)
        events = act(ex, action)
        if copy is not None:
            assert act(copy, action) == events, (seed, step)
            checked += len(events)
    assert exports(copy) == exports(ex)
    assert checked > 500  # the stream after the restore really did something
    assert any(type(e).__name__ == "LiquidationTrigger" for e in ex.log)


def test_load_refuses_an_engine_that_already_has_state():
    ex = CoreExchange(markets())
    ex.deposit("a", "100")
    with pytest.raises(ValueError, match="new engine"):
        ex.risk.load(ex.risk.export())


def test_a_snapshot_of_another_version_is_refused_by_name():
    snapshot = Snapshot(STATE_VERSION + 1, "risk", 0, 0, 0, {}, CoreExchange(markets()).risk.export())
    with pytest.raises(StateError, match=f"snapshot version {STATE_VERSION + 1}"):
        decode_snapshot(encode_snapshot(snapshot))
    with pytest.raises(StateError, match="not a snapshot"):
        decode_snapshot(b"\x01\xc1")


def test_a_snapshot_from_before_positions_had_keys_is_refused_with_both_versions():
    # version 1 keyed positions and buckets by market strings ("" for cross); this build
    # keys them by schemas.keys and must not read the old rows as if they were new
    old = Snapshot(1, "risk", 0, 0, 0, {}, CoreExchange(markets()).risk.export())
    with pytest.raises(StateError, match=f"version 1 \\(this build reads {STATE_VERSION}\\)"):
        decode_snapshot(encode_snapshot(old))
