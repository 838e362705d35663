"""What the live participants see of the venue (services.sim.live.LiveView): an order asked
to be cancelled is not cancelled again while the venue is slow to answer.

Before, a market maker that requotes every tick cancelled each of its orders once per tick
until the venue's answer came back; the cancels grew with the latency and the latency with
the cancels (600 orders/s became 9,000 commands/s within two minutes, and a bot's market
orders took seconds to answer)."""

from __future__ import annotations

from exchange.markets import default_markets
from schemas.enums import CloseReason, OrderType, RejectReason, Side, TimeInForce
from schemas.events import CommandRejected, MarkPrice, OrderAccepted, OrderClosed
from services.sim.live import LiveView
from services.sim.participants import Cancel, MarketMaker

SOL = "SOL-PERP"


def accepted(order_id: int, account: str = "mm") -> OrderAccepted:
    return OrderAccepted("match.p0", order_id, SOL, account, order_id, f"a{order_id}", Side.BUY, OrderType.LIMIT,
                         TimeInForce.GTC, 14_900, 100)


def cancels(intents) -> list[int]:
    return sorted(intent.order_id for intent in intents if isinstance(intent, Cancel))


def sent(view: LiveView, intents) -> None:
    """What the live driver does for each cancel it sends."""
    for intent in intents:
        if isinstance(intent, Cancel):
            view.cancel_sent(intent.account, intent.order_id)


def test_a_maker_cancels_each_order_once_while_the_venue_has_not_answered():
    view = LiveView(default_markets())
    view.observe(MarkPrice("oracle", 1, SOL, 15_000, 15_000))
    maker = MarketMaker("mm", 1, SOL)
    view.observe(accepted(1))
    view.observe(accepted(2))
    first = maker.on_tick(view)
    assert cancels(first) == [1, 2]
    sent(view, first)
    # no answer yet: the next ticks requote but do not cancel 1 and 2 again
    assert cancels(maker.on_tick(view)) == []
    assert cancels(maker.on_tick(view)) == []
    assert view.open_orders("mm", SOL) == []
    # 1 closes as cancelled; the cancel of 2 is refused (it stays live): 2 is cancelled again
    view.observe(OrderClosed("match.p0", 10, SOL, "mm", 1, CloseReason.CANCELED, 0, 100))
    view.observe(CommandRejected("match.p0", 11, "mm", "client", 5, "CancelOrder", RejectReason.UNKNOWN_ACCOUNT,
                                 "refused", 2))
    view.observe(accepted(3))
    assert cancels(maker.on_tick(view)) == [2, 3]
    assert view.orders["mm"] == {2: SOL, 3: SOL}


def test_a_cancel_sent_for_an_order_already_closed_is_not_remembered():
    view = LiveView(default_markets())
    view.observe(accepted(1))
    view.observe(OrderClosed("match.p0", 10, SOL, "mm", 1, CloseReason.FILLED, 100, 0))
    view.cancel_sent("mm", 1)  # the order had closed before the cancel went out
    assert view.cancelling == set()


async def test_the_participants_client_counts_every_event_but_remembers_only_the_latest():
    """It kept every one: at six times the scenario's rate the test process held a gigabyte
    within minutes. Its view is built by a listener; the settling counts ``received``."""
    import asyncio

    from schemas import ACCOUNT_EVENTS, codec, topic_partitions
    from schemas.events import CommandAccepted
    from services.runtime.memory import MemoryBus
    from services.sim.live import CLIENT_KEEP, LiveMarket
    from services.sim.simulation import load_scenario

    bus = MemoryBus(topic_partitions(2))
    market = LiveMarket(bus, default_markets(), load_scenario("calm"))
    seen = []
    market.client.listen(seen.append)
    async with market.client:
        sent = 2 * CLIENT_KEEP + 500
        await bus.send([(ACCOUNT_EVENTS, n % 2, None,
                         codec(ACCOUNT_EVENTS).encode(CommandAccepted("risk.p0", n + 1, f"a{n}", "c", n, "Deposit")))
                        for n in range(sent)])
        for _ in range(200):
            if market.client.received == sent:
                break
            await asyncio.sleep(0.05)
    assert market.client.received == sent == len(seen)  # every one counted and shown to the view
    assert len(market.client.events) <= 2 * CLIENT_KEEP  # but not every one kept
