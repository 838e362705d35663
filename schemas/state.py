"""Snapshots of the services' state, as they are kept on the bus (docs/services.md, "State").

A ``Snapshot`` is everything one input partition of a service folded so far: the
engine's state (one of the ``*State`` structs, tagged), the input offset it covers, the
last sequence number applied per producer, and a fingerprint of the last input record it
applied, by which a restoring instance checks that the snapshot belongs to the log it
would resume. It is encoded with msgpack (``encode_snapshot``), split into chunks no
larger than a record may be (``SnapshotChunk``), and written to the compacted ``state``
topic.

Only data: no code is run to decode a snapshot (unlike pickle, a record on the bus
cannot make a service execute anything). ``STATE_VERSION`` is bumped on any change that
is not a field appended with a default.
"""

from __future__ import annotations

import msgspec

from schemas.enums import (
    Condition,
    LiquidationStage,
    MarginMode,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import CollateralTransfer, IncomeItem, LiquidationTrigger
from schemas.keys import BucketId, PositionKey

STATE_VERSION = 2  # 2: positions and buckets keyed by schemas.keys (PositionKey, BucketId)


class _Row(msgspec.Struct, array_like=True, gc=False):
    pass


# ------------------------------------------------------------------------- matching


class RestingOrder(_Row):
    order_id: int
    account: str
    side: Side
    price: int
    size: int
    remaining: int
    tif: TimeInForce
    reduce_only: bool
    stp: SelfTradePrevention
    client_order_id: str
    priority: int


class ConditionalRow(_Row):
    """A conditional order waiting for its trigger (``exchange.triggers``); ``extreme`` is a
    trailing stop's best price since activation (0: not activated yet)."""

    order_id: int
    account: str
    side: Side
    condition: Condition
    order_type: int
    tif: TimeInForce
    price: int
    size: int
    reduce_only: bool
    close_position: bool
    stp: SelfTradePrevention
    client_order_id: str
    trigger_price: int
    source: TriggerSource
    activation_price: int
    callback_ppm: int
    extreme: int
    priority: int


class MarketState(_Row):
    """One market's matching engine; ``orders``: bids then asks, each in priority order;
    ``conditionals`` in priority order."""

    market: str
    producer: str
    seq: int
    trade_id: int
    priority: int
    positions: list[tuple[PositionKey, int]]  # each position's signed size, from this market's fills
    last_price: int
    bbo: tuple[int, int, int, int]
    orders: list[RestingOrder]
    mark_price: int = 0
    conditionals: list[ConditionalRow] = []


class MatchingState(msgspec.Struct, tag="MatchingState", gc=False):
    producer: str
    seq: int
    markets: list[MarketState]


# ----------------------------------------------------------------------------- risk


class PositionRow(_Row):
    key: PositionKey
    mode: MarginMode
    leverage: int
    size: int
    entry_value: int
    margin: int


class OpenOrderRow(_Row):
    order_id: int
    market: str
    side: int
    price: int
    remaining: int
    reserved: int
    reduce_only: bool
    client_order_id: str
    conditional: bool = False  # waiting for its trigger in matching; reserves nothing


class AccountRow(_Row):
    account_id: str
    balance: int
    fees_paid: int
    funding_paid: int
    income: list[IncomeItem]
    positions: list[PositionRow]
    orders: list[OpenOrderRow]
    reserved: int
    liquidating: list[BucketId]


class BudgetRow(_Row):
    """A multi-market cross bucket's movement budget: the travel of each market's mark
    at which it must be checked again."""

    account: str
    thresholds: list[tuple[str, int]]


class RiskState(msgspec.Struct, tag="RiskState", gc=False):
    producer: str
    seq: int
    order_counter: int
    deposits: int
    withdrawals: int
    fees: int
    funding_net: int
    bad_debt: int
    liquidation_fees: int
    accounts: list[AccountRow]
    marks: dict[str, int]
    last_prices: dict[str, int]
    in_liquidation: list[str]
    changed: list[str]
    adl_ranked: list[BucketId]
    pending: list[CollateralTransfer]
    fund_changed: bool
    travel: dict[str, int]
    budgets: list[BudgetRow]
    applied: dict[str, int] = {}  # RiskEngine.applied
    index: dict[str, int] = {}  # RiskEngine.index


# ---------------------------------------------------------------------- liquidation


class BucketRow(_Row):
    state: LiquidationTrigger
    outstanding: list[int]
    round_filled: int
    waiting: bool
    settling: LiquidationStage | None


class LiquidationState(msgspec.Struct, tag="LiquidationState", gc=False):
    producer: str
    seq: int
    order_counter: int
    active: list[BucketRow]
    last_partial: dict[str, int]
    order_buckets: list[tuple[int, str, str]]


# --------------------------------------------------------------------------- oracle


class OracleState(msgspec.Struct, tag="OracleState", gc=False):
    """The oracle's simulation clock: wall-clock nanoseconds at simulated time 0."""

    epoch_ns: int


EngineState = MatchingState | RiskState | LiquidationState | OracleState


class Snapshot(msgspec.Struct, gc=False):
    version: int
    service: str
    partition: int
    offset: int  # the next input offset to read
    fingerprint: int  # of the input record at offset - 1 (0 when offset is 0)
    last_seq: dict[str, int]
    state: EngineState
    written_ns: int = 0
    epochs: dict[str, int] = {}  # the highest epoch seen per producer (services.runtime.claims)


class SnapshotChunk(msgspec.Struct, array_like=True, gc=False):
    """One record of the ``state`` topic: part ``index`` of ``count`` of a snapshot."""

    version: int
    service: str
    partition: int
    generation: int
    index: int
    count: int
    data: bytes


_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)
_chunk_decoder = msgspec.msgpack.Decoder(SnapshotChunk)


class StateError(ValueError):
    """A state record or snapshot that cannot be read by this build."""


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return _encoder.encode(snapshot)


def _decode(decoder: msgspec.msgpack.Decoder, data: bytes, what: str):
    try:
        decoded = decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise StateError(f"not a {what}: {exc}") from None
    if decoded.version != STATE_VERSION:
        raise StateError(f"{what} version {decoded.version} (this build reads {STATE_VERSION})")
    return decoded


def decode_snapshot(data: bytes) -> Snapshot:
    return _decode(_snapshot_decoder, data, "snapshot")


def encode_chunk(chunk: SnapshotChunk) -> bytes:
    return _encoder.encode(chunk)


def decode_chunk(data: bytes) -> SnapshotChunk:
    return _decode(_chunk_decoder, data, "snapshot chunk")
