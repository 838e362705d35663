"""The contract: every message round-trips on its topics; bad payloads raise SchemaError."""

from __future__ import annotations

import enum

import msgspec
import pytest

from schemas import SCHEMA_VERSION, TOPICS, SchemaError, codec
from schemas.enums import OrderType, Side, TimeInForce
from schemas.events import Deposit, Fill, Message, NewOrder, PlaceOrder, Trade


def sample(type_info: msgspec.inspect.Type, depth: int = 0):
    """A value of every field's type, built from the type description alone."""
    info = type_info
    if isinstance(info, msgspec.inspect.StrType):
        return "x"
    if isinstance(info, msgspec.inspect.BoolType):
        return True
    if isinstance(info, msgspec.inspect.IntType):  # the edge of the field's range, where it has one
        return info.le if info.le is not None else -123456789012
    if isinstance(info, msgspec.inspect.BytesType):
        return b"\x00\xff raw"
    if isinstance(info, msgspec.inspect.EnumType):
        return list(info.cls)[-1]
    if isinstance(info, msgspec.inspect.ListType):
        return [sample(info.item_type, depth + 1)]
    if isinstance(info, msgspec.inspect.DictType):
        return {sample(info.key_type, depth + 1): sample(info.value_type, depth + 1)}
    if isinstance(info, msgspec.inspect.TupleType):
        return tuple(sample(item, depth + 1) for item in info.item_types)
    if isinstance(info, msgspec.inspect.StructType):
        return info.cls(**{field.name: sample(field.type, depth + 1) for field in info.fields})
    raise AssertionError(f"no sample for {info}")


def members(union) -> list[type]:
    return list(getattr(union, "__args__", (union,)))


ALL = [(topic, kind) for topic, union in TOPICS.items() for kind in members(union)]


@pytest.mark.parametrize(("topic", "kind"), ALL, ids=[f"{t}:{k.__name__}" for t, k in ALL])
def test_every_message_round_trips_on_its_topic(topic, kind):
    message = sample(msgspec.inspect.type_info(kind))
    assert isinstance(message, Message)
    payload = codec(topic).encode(message)
    assert payload[0] == SCHEMA_VERSION
    assert codec(topic).decode(payload) == [message]


def test_a_batch_keeps_its_order():
    messages = [Deposit("cli", seq, "acct", seq * 10) for seq in range(1, 50)]
    assert codec("risk.in").decode(codec("risk.in").encode_many(messages)) == messages


def test_enums_decode_to_their_members():
    order = NewOrder("risk", 1, "a", "BTC-PERP", 9, "c9", Side.SELL, OrderType.LIMIT, TimeInForce.FOK, 100, 2)
    decoded = codec("match.in").decode(codec("match.in").encode(order))[0]
    assert decoded.side is Side.SELL and decoded.tif is TimeInForce.FOK


def test_every_message_starts_with_producer_and_sequence():
    for _, kind in ALL:
        fields = [field.name for field in msgspec.structs.fields(kind)]
        assert fields[:2] == ["producer", "seq"], kind.__name__


def duplicated_codes(kind: type[enum.IntEnum]) -> dict[int, list[str]]:
    """The codes that more than one name of ``kind`` carries. ``__members__`` holds aliases
    too (iterating an enum skips them, and a repeated code is an alias)."""
    names: dict[int, list[str]] = {}
    for name, member in kind.__members__.items():
        names.setdefault(member.value, []).append(name)
    return {code: found for code, found in names.items() if len(found) > 1}


def test_every_enum_has_unique_explicit_codes():
    import schemas.enums as enums

    checked = 0
    for value in vars(enums).values():
        if isinstance(value, type) and issubclass(value, enum.IntEnum) and value is not enum.IntEnum:
            assert duplicated_codes(value) == {}, value.__name__
            checked += 1
    assert checked >= 10


def test_the_duplicate_code_check_finds_an_alias():
    class Twice(enum.IntEnum):
        ONE = 1
        UNO = 1
        TWO = 2

    assert len(list(Twice)) == 2  # what the old check iterated: the alias is invisible there
    assert duplicated_codes(Twice) == {1: ["ONE", "UNO"]}


# The wire's tags, frozen: renaming a class must not change what is on the bus. A change
# here is a change of the wire format (bump SCHEMA_VERSION or STATE_VERSION with it).
GOLDEN_TAGS = {
    "risk.in": ["Deposit", "Withdraw", "PlaceOrder", "CancelOrder", "AmendOrder", "SetMarginMode", "SetLeverage",
                "AdjustIsolatedMargin", "OrderAccepted", "OrderRejected", "OrderAmended", "OrderClosed",
                "OrderTriggered", "Fill", "CommandRejected", "MarkPrice", "Funding", "LiquidationOutcome",
                "CollateralTransfer"],
    "match.in": ["NewOrder", "CancelOrder", "AmendOrder", "CancelAllOrders", "PositionTransfer", "MarkPrice"],
    "liquidation.in": ["LiquidationTrigger", "OrderClosed", "OrderRejected"],
    "market.data": ["Trade", "BookDelta", "BookSnapshot", "BBO", "MarkPrice", "Funding"],
    "account.events": ["CommandAccepted", "CommandRejected", "OrderAccepted", "OrderRejected", "OrderAmended",
                       "OrderClosed", "OrderTriggered", "Fill", "MarginSnapshot", "LiquidationOutcome",
                       "CollateralTransfer"],
    "deadletter": ["DeadLetter"],
    "keys": ["ApiKey"],
}
GOLDEN_STATE_TAGS = ["MatchingState", "RiskState", "LiquidationState", "OracleState"]


def test_every_topic_carries_exactly_the_frozen_tags():
    tags = {topic: [msgspec.inspect.type_info(kind).tag for kind in members(union)]
            for topic, union in TOPICS.items()}
    assert tags == GOLDEN_TAGS


def test_every_snapshot_state_has_its_frozen_tag():
    from schemas.state import EngineState

    assert [msgspec.inspect.type_info(kind).tag for kind in members(EngineState)] == GOLDEN_STATE_TAGS


def test_every_tagged_struct_names_its_tag_explicitly():
    """A struct that inherits ``tag=True`` is tagged by its class name, so a rename would
    change the wire without any test noticing: each one spells its tag out."""
    import ast
    import inspect

    import schemas.events
    import schemas.state

    implicit = []
    for module in (schemas.events, schemas.state):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.ClassDef) or node.name == "Message":
                continue
            bases = {ast.unparse(base) for base in node.bases}
            tag = next((k.value for k in node.keywords if k.arg == "tag"), None)
            if "Message" in bases or (tag is not None):
                if not (isinstance(tag, ast.Constant) and isinstance(tag.value, str)):
                    implicit.append(node.name)
    assert implicit == []


GOOD = codec("risk.in").encode(Deposit("cli", 1, "acct", 5))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "too short"),
        (b"\x01", "too short"),
        (bytes([SCHEMA_VERSION + 1]) + GOOD[1:], "schema version"),
        (b"\x01\xc1\xc1\xc1", "not msgpack"),
        (GOOD[:-3], "not msgpack"),
        (b"\x01" + msgspec.msgpack.encode([["Nonsense", "p", 1]]), "invalid message"),
        (b"\x01" + msgspec.msgpack.encode([["Deposit", "p", "one", "acct", 5]]), "invalid message"),
        (b"\x01" + msgspec.msgpack.encode([["Deposit", "p", 1]]), "invalid message"),
        (b"\x01" + msgspec.msgpack.encode({"not": "a list"}), "invalid message"),
        (codec("match.in").encode(NewOrder("r", 1, "a", "BTC-PERP", 1, "", Side.BUY, OrderType.LIMIT,
                                           TimeInForce.GTC, 1, 1)), "invalid message"),
    ],
)
def test_malformed_payloads_raise_schema_error_naming_topic_and_problem(payload, problem):
    with pytest.raises(SchemaError) as caught:
        codec("risk.in").decode(payload)
    assert caught.value.topic == "risk.in"
    assert problem in str(caught.value)
    assert str(caught.value).startswith("risk.in: ")


def test_decoding_a_non_bytes_value_raises_schema_error():
    with pytest.raises(SchemaError, match="expected bytes"):
        codec("risk.in").decode("text")  # type: ignore[arg-type]


def test_encoding_a_message_on_the_wrong_topic_is_refused():
    fill = Fill("m", 1, "BTC-PERP", 1, 100, 1, Side.BUY, "a", 1, "b", 2)
    with pytest.raises(SchemaError, match="Fill is not a message of this topic"):
        codec("market.data").encode(fill)
    with pytest.raises(SchemaError, match="PlaceOrder"):
        codec("match.in").encode(PlaceOrder("c", 1, "a", "BTC-PERP", "x", Side.BUY, OrderType.LIMIT,
                                            TimeInForce.GTC, 1, 1))


def test_unknown_topic_names_the_known_ones():
    with pytest.raises(KeyError, match="market.data"):
        codec("nope")


def test_public_trade_carries_no_account():
    assert "account" not in " ".join(field.name for field in msgspec.structs.fields(Trade))


def int_fields(kind) -> list[tuple[str, msgspec.inspect.IntType]]:
    return [(f.name, f.type) for f in msgspec.inspect.type_info(kind).fields
            if isinstance(f.type, msgspec.inspect.IntType)]


@pytest.mark.parametrize(("topic", "kind"), ALL, ids=[f"{t}:{k.__name__}" for t, k in ALL])
def test_an_integer_just_outside_its_range_is_refused_on_decode(topic, kind):
    """Every integer field is bounded (the codec carries int64 at most; the engines less
    for inputs), one past either bound is a SchemaError, never a value the engines see."""
    fields = int_fields(kind)
    assert fields and all(t.ge is not None and t.le is not None for _, t in fields), fields
    base = sample(msgspec.inspect.type_info(kind))
    for name, bounds in fields:
        for value in (bounds.le + 1, bounds.ge - 1):
            if not -2**63 <= value < 2**64:
                continue  # msgpack cannot carry it: the sender's encoder refuses it already
            bad = msgspec.structs.replace(base, **{name: value})
            with pytest.raises(SchemaError, match="invalid message: Expected `int`"):
                codec(topic).decode(codec(topic).encode(bad))


def test_a_client_order_id_longer_than_the_contract_carries_is_refused_on_both_sides():
    """A bot sent a 1,000 KiB client order id and it traded: the contract bounds it, so a
    reader dead-letters such a record and the native client refuses to send it."""
    import asyncio

    from exchange.markets import default_markets
    from schemas import topic_partitions
    from schemas.enums import RejectReason
    from schemas.events import MAX_CLIENT_ORDER_ID
    from services.client import Client, Rejected
    from services.runtime.memory import MemoryBus

    def order(client_order_id: str) -> PlaceOrder:
        return PlaceOrder("c", 1, "a", "SOL-PERP", client_order_id, Side.BUY, OrderType.LIMIT, TimeInForce.GTC,
                          15000, 100, False, 1)

    assert codec("risk.in").decode(codec("risk.in").encode(order("x" * MAX_CLIENT_ORDER_ID)))
    raw = b"\x01" + msgspec.msgpack.encode([order("x" * (MAX_CLIENT_ORDER_ID + 1))])  # as a raw producer would
    with pytest.raises(SchemaError, match="client_order_id"):
        codec("risk.in").decode(raw)

    async def place() -> tuple[RejectReason, int]:
        bus = MemoryBus(topic_partitions(1))
        async with Client(bus, default_markets()) as client:
            with pytest.raises(Rejected) as refused:
                await client.place("a", "SOL-PERP", Side.BUY, "1", "150", client_order_id="x" * 1_024_000)
        return refused.value.reason, len(bus._log["risk.in"][0])

    assert asyncio.run(place()) == (RejectReason.INVALID_CLIENT_ORDER_ID, 0)  # refused, and nothing sent
