"""The routes table (``schemas.topics.ROUTES``) against who may say what (``SENDERS``):
every route a service takes is one its readers accept, and everything a service may send
has a route; and the outbox sends a service's output where the table says."""

from __future__ import annotations

import typing

import pytest

from schemas import ACCOUNT_EVENTS, MARKET_DATA, MATCH_IN, RISK_IN, codec, topic_partitions
from schemas.enums import CloseReason, Liquidity, RejectReason, Side
from schemas.events import LIQUIDATION_ORDER_BIT, Fill, MarkPrice, OrderClosed, OrderRejected, Trade
from schemas.topics import CLIENT, MATCHING, ORACLE, RISK, ROUTES, SENDERS, TOPICS, Unroutable
from services.runtime.bus import partition_for
from services.runtime.memory import MemoryBus
from services.runtime.runner import Outbox


def published(route, kind: type) -> type:
    return kind if route.convert is None else typing.get_type_hints(route.convert)["return"]


def carried(topic: str) -> set[type]:
    union = TOPICS[topic]
    return set(getattr(union, "__args__", (union,)))


ROUTED = [(service, kind, route) for service, table in ROUTES.items() for kind, routes in table.items()
          for route in routes]


@pytest.mark.parametrize(("service", "kind", "route"), ROUTED,
                         ids=[f"{s.rstrip('.')}:{k.__name__}->{r.topic}" for s, k, r in ROUTED])
def test_every_route_is_one_its_readers_accept(service, kind, route):
    message_type = published(route, kind)
    assert message_type in carried(route.topic)
    producer = route.forwards or service  # a forwarded message keeps its producer's name
    assert producer in SENDERS[route.topic][message_type], \
        f"{service} routes {message_type.__name__} to {route.topic} from {producer}, which SENDERS does not allow"


def test_everything_a_service_may_send_has_a_route():
    missing = []
    for topic, table in SENDERS.items():
        for kind, senders in table.items():
            for sender in senders:
                if sender == CLIENT:
                    continue
                if not any(route.topic == topic and published(route, source) is kind
                           for service, table in ROUTES.items() for source, routes in table.items()
                           for route in routes if (route.forwards or service) == sender):
                    missing.append((sender, kind.__name__, topic))
    assert missing == []


def sent(outbox: Outbox) -> dict[tuple[str, int], list]:
    return {(topic, partition): codec(topic).decode(value) for topic, partition, _, value, *_ in outbox.drain()}


def test_a_fill_goes_to_both_accounts_and_to_the_public_tape_as_a_trade():
    bus = MemoryBus(topic_partitions(8))
    fill = Fill("match.p0", 7, "SOL-PERP", 3, 15000, 200, Side.BUY, "alice", 11, "bob", 12, Liquidity.BOOK, 99)
    outbox = Outbox(bus)
    outbox.route(ROUTES[MATCHING], [fill])
    where = sent(outbox)
    expected = {(RISK_IN, partition_for(a, 8)) for a in ("alice", "bob")} | \
        {(ACCOUNT_EVENTS, partition_for(a, 8)) for a in ("alice", "bob")} | \
        {(MARKET_DATA, partition_for("SOL-PERP", 8))}
    assert set(where) == expected
    assert where[(MARKET_DATA, partition_for("SOL-PERP", 8))] == \
        [Trade("match.p0", 7, "SOL-PERP", 3, 15000, 200, Side.BUY, 99)]
    assert all(messages == [fill] for key, messages in where.items() if key[0] != MARKET_DATA)


def test_a_mark_goes_to_every_risk_partition_and_to_its_markets_matching():
    bus = MemoryBus(topic_partitions(4))
    outbox = Outbox(bus)
    outbox.route(ROUTES[ORACLE], [MarkPrice("oracle", 5, "ETH-PERP", 3000, 3001, 1)])
    assert set(sent(outbox)) == {(RISK_IN, p) for p in range(4)} | \
        {(MATCH_IN, partition_for("ETH-PERP", 4)), (MARKET_DATA, partition_for("ETH-PERP", 4))}


def test_a_liquidation_orders_outcome_goes_to_liquidation_and_a_traders_to_the_trader():
    bus = MemoryBus(topic_partitions(1))
    outbox = Outbox(bus)
    closed = OrderClosed("match.p0", 1, "SOL-PERP", "alice", 5 | LIQUIDATION_ORDER_BIT, CloseReason.CANCELED, 0, 1, 1)
    refused = OrderRejected("risk.p0", 2, "SOL-PERP", "alice", 6, "c6", RejectReason.INSUFFICIENT_MARGIN, "no", 1)
    outbox.route(ROUTES[RISK], [closed, refused])
    assert sent(outbox) == {("liquidation.in", 0): [closed], (ACCOUNT_EVENTS, 0): [refused]}


def test_an_output_with_no_route_is_refused_not_dropped():
    with pytest.raises(Unroutable, match="Trade has no route"):
        Outbox(MemoryBus(topic_partitions(1))).route(ROUTES[RISK], [Trade("x", 1, "SOL-PERP", 1, 1, 1, Side.BUY, 1)])
