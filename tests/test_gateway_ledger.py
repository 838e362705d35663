"""The gateway's projections, without a network: candles, and the account ledger's
ordering and redelivery rules."""

from __future__ import annotations

from collections import deque

from exchange.markets import default_markets
from schemas.enums import CloseReason, IncomeKind, OrderType, Side, TimeInForce
from schemas.events import (
    Fill,
    IncomeItem,
    MarginSnapshot,
    OrderAccepted,
    OrderClosed,
    Trade,
)
from services.gateway.binance.wire import shown_client_id, user_event
from services.gateway.ledger import Ledger, OrderKind, OrderStatus, money
from services.gateway.projection import MarketProjection, aggregate

MINUTE_NS = 60 * 10**9
SOL = default_markets()["SOL-PERP"]


def test_money_is_exact():
    assert money(1_234_567) == "1.234567" and money(-5) == "-0.000005" and money(0) == "0.000000"
    assert money(10**18 + 1) == "1000000000000.000001"  # beyond a float's 15 digits


def test_one_minute_candles_aggregate_to_any_interval():
    projection = MarketProjection({"SOL-PERP": SOL.value_per_tick_lot})
    base = 1_700_000_000 * 10**9 // (3600 * 10**9) * 3600 * 10**9  # on the hour
    trades = [(0, 15000, 100, Side.BUY), (30, 15100, 200, Side.SELL), (60, 14900, 100, Side.BUY),
              (61 * 60, 15200, 300, Side.BUY)]  # seconds after the hour
    for number, (second, price, size, side) in enumerate(trades, 1):
        projection.apply(Trade("m", number, "SOL-PERP", number, price, size, side, base + second * 10**9))
    candles = projection.markets["SOL-PERP"].candles
    assert [(c[0] * 10**6 - base) // MINUTE_NS for c in candles] == [0, 1, 61]
    assert candles[0][1:8] == [15000, 15100, 15000, 15100, 300, 15000 * 100 * 100 + 15100 * 200 * 100, 2]
    assert candles[0][8] == 100  # taker-buy lots
    hourly = aggregate(candles, 3_600_000, None, None, 10)
    assert [(c[1], c[2], c[3], c[4], c[5], c[7]) for c in hourly] == [(15000, 15100, 14900, 14900, 400, 3),
                                                                      (15200, 15200, 15200, 15200, 300, 1)]
    assert aggregate(candles, 60_000, None, None, 1)[0][1] == 15200  # the newest, by default
    assert aggregate(candles, 60_000, base // 10**6, None, 1)[0][1] == 15000  # from startTime on
    assert aggregate(deque(), 60_000, None, None, 5) == []


def accepted(order_id: int, size: int = 100) -> OrderAccepted:
    return OrderAccepted("risk", order_id, "SOL-PERP", "bot", order_id, f"c{order_id}", Side.BUY,
                         OrderType.LIMIT, TimeInForce.GTC, 15000, size, False, 1)


def test_a_fill_and_close_that_overtake_the_acceptance_still_count():
    updates = []
    markets = default_markets()
    ledger = Ledger(markets, notify=lambda account, event: updates.append((account, user_event(event, markets))))
    fill = Fill("matching", 1, "SOL-PERP", 7, 15000, 100, Side.SELL, "maker", 99, "bot", 5, ts=2)
    ledger.apply(fill)  # through the maker's partition, before the bot's acceptance
    ledger.apply(OrderClosed("matching", 2, "SOL-PERP", "bot", 5, CloseReason.FILLED, 100, 0, 3))
    ledger.apply(accepted(5))
    order = ledger.orders[5]
    assert (order.status, order.executed, ledger.open_orders("bot")) == (OrderStatus.FILLED, 100, [])
    assert [p["o"]["x"] for a, p in updates if a == "bot"] == ["NEW", "TRADE"]
    [trade] = ledger.account("bot").trades
    assert trade.maker and trade.commission == 15000 * 100 * 100 * 200 // 1_000_000  # maker fee, 2 bp


def test_a_redelivered_snapshot_adds_its_income_once():
    ledger = Ledger(default_markets())
    snapshot = MarginSnapshot("risk.0.margin", 10, "bot", 1000, 1000, 1000, [], [], 5,
                              [IncomeItem("", IncomeKind.TRANSFER, 1000, 0, 5)])
    ledger.apply(snapshot)
    ledger.apply(snapshot)  # at-least-once delivery, or a replay after a restart
    older = MarginSnapshot("risk.0.margin", 9, "bot", 0, 0, 0, [], [], 4, [])
    ledger.apply(older)
    assert [item.amount for _, item in ledger.account("bot").income] == [1000]
    assert ledger.snapshot("bot").seq == 10  # the newest state stays


def test_each_side_of_a_backstop_or_adl_transfer_is_an_order_of_its_own():
    from exchange.markets import default_markets
    from schemas.enums import Liquidity, Side
    from schemas.events import Fill
    from services.gateway.ledger import Ledger

    ledger = Ledger(default_markets())
    ledger.apply(Fill("match.p0", 5, "SOL-PERP", 7, 11_000, 1_000, Side.BUY, "insurance", 0, "bot", 0,
                      Liquidity.BACKSTOP, 10**18))
    ledger.apply(Fill("match.p0", 6, "SOL-PERP", 8, 9_000, 500, Side.BUY, "winner", 0, "loser", 0,
                      Liquidity.ADL, 10**18))
    [bot] = ledger.forced_orders("bot")
    [fund] = ledger.forced_orders("insurance")
    assert bot.order_id != fund.order_id
    assert (bot.side, bot.status, bot.executed, bot.kind) == (Side.SELL, OrderStatus.FILLED, 1_000, OrderKind.LIQUIDATION)
    assert (fund.side, fund.status) == (Side.BUY, OrderStatus.FILLED)
    [loser] = ledger.forced_orders("loser")
    [winner] = ledger.forced_orders("winner")
    assert (loser.kind, winner.kind) == (OrderKind.ADL, OrderKind.ADL)
    # the ledger gives a forced close no client id; Binance's dialect names it as Binance does
    assert shown_client_id(bot) == f"autoclose-{10**18 // 10**6}7" and shown_client_id(fund).startswith("autoclose-")
    assert {shown_client_id(loser), shown_client_id(winner)} == {"adl_autoclose"}
    assert bot.client_order_id == loser.client_order_id == ""
    # each trade names its side's order, so a bot's trade history joins with its order history
    assert [t.order_id for t in ledger.account("bot").trades] == [bot.order_id]
    assert not ledger.open_orders("bot")


def test_the_hyperliquid_agent_digest_is_eip712s():
    """The direct digest recovers the same signer as eth-account's generic EIP-712 encoding."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    from services.gateway.hyperliquid.exchange import connection_id, signers

    wallet = Account.create()
    action = {"type": "cancel", "cancels": [{"a": 2, "o": 7}]}
    connection = connection_id(action, None, 1234, None)
    typed = {"domain": {"chainId": 1337, "name": "Exchange", "verifyingContract": "0x" + "0" * 40, "version": "1"},
             "types": {"Agent": [{"name": "source", "type": "string"}, {"name": "connectionId", "type": "bytes32"}],
                       "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                        {"name": "chainId", "type": "uint256"},
                                        {"name": "verifyingContract", "type": "address"}]},
             "primaryType": "Agent", "message": {"source": "b", "connectionId": connection}}
    signed = wallet.sign_message(encode_typed_data(full_message=typed))
    signature = {"r": hex(signed.r), "s": hex(signed.s), "v": signed.v}
    assert list(signers(action, signature, None, 1234, None))[1] == wallet.address.lower()  # source "b"


def test_hyperliquid_price_and_size_validity_rules():
    # Hyperliquid docs, "Tick and lot size": 5 significant figures (integers exempt), at most
    # 6 − szDecimals decimals for a price, szDecimals for a size; SOL here has szDecimals 2
    from decimal import Decimal

    from exchange.markets import default_markets
    from services.gateway.hyperliquid.exchange import valid_order

    sol, btc = default_markets()["SOL-PERP"], default_markets()["BTC-PERP"]
    assert valid_order(sol, Decimal("150.12"), Decimal("1.25")) == ""
    assert valid_order(sol, Decimal("150.123"), Decimal("1")) == "Order has invalid price."  # 6 figures
    assert valid_order(sol, Decimal("1.23456"), Decimal("1")) == "Order has invalid price."  # 5 decimals > 4
    assert valid_order(btc, Decimal("123456"), Decimal("0.001")) == ""  # an integer price
    assert valid_order(btc, Decimal("12345.5"), Decimal("0.001")) == "Order has invalid price."
    assert valid_order(sol, Decimal("150"), Decimal("1.255")) == "Order has invalid size."


def test_a_hyperliquid_price_finer_than_the_tick_is_placed_on_the_traders_safe_side():
    """SOL at 99.123 is valid on Hyperliquid (5 figures, 3 decimals <= 6 − 2) and was refused
    "Price must be divisible by tick size" (SOL's tick here is 0.01)."""
    from decimal import Decimal

    from exchange.markets import default_markets
    from services.gateway.hyperliquid.exchange import on_tick, valid_order

    sol = default_markets()["SOL-PERP"]
    assert valid_order(sol, Decimal("99.123"), Decimal("1")) == ""
    assert on_tick(sol, Decimal("99.123"), Side.BUY) == Decimal("99.12")  # a buy never pays more than asked
    assert on_tick(sol, Decimal("99.123"), Side.SELL) == Decimal("99.13")  # a sell never gets less
    assert on_tick(sol, Decimal("99.12"), Side.SELL) == Decimal("99.12")  # on the tick: as asked
    assert on_tick(sol, Decimal("99.127")) == Decimal("99.13")  # a trigger: the nearest tick
    assert on_tick(sol, Decimal("0.001"), Side.BUY) == 0  # below one tick: refused, never placed higher


def test_a_trade_knows_the_position_before_it_and_hyperliquid_names_its_direction():
    """Every fill said "Open Long"/"Open Short" with startPosition "0.0", closing ones too,
    and a liquidation's fill had no ``liquidation``: Freqtrade mislabelled its exits."""
    from services.gateway.hyperliquid.info import direction

    assert [direction(0, 5), direction(3, 2), direction(-5, 2), direction(-5, 5), direction(-2, 5)] == \
        ["Open Long", "Open Long", "Close Short", "Close Short", "Short > Long"]
    assert [direction(0, -5), direction(-3, -2), direction(5, -2), direction(5, -5), direction(2, -5)] == \
        ["Open Short", "Open Short", "Close Long", "Close Long", "Long > Short"]
    ledger = Ledger(default_markets())
    trades = [(1, Side.BUY, 300), (2, Side.SELL, 100), (3, Side.SELL, 500)]  # the bot takes each
    for trade_id, side, size in trades:
        ledger.apply(Fill("match.p0", trade_id, "SOL-PERP", trade_id, 15000, size, side, "bot", trade_id, "mm", 90))
    assert [(t.start, t.size, t.side) for t in ledger.account("bot").trades] == \
        [(0, 300, Side.BUY), (300, 100, Side.SELL), (200, 500, Side.SELL)]
    assert [t.start for t in ledger.account("mm").trades] == [0, -300, -200]  # the other side's, mirrored


def test_hyperliquids_errors_are_in_its_words_and_never_name_an_enum():
    from schemas.enums import RejectReason
    from services.client import Rejected
    from services.gateway.hyperliquid.exchange import _error_text

    for reason in RejectReason:
        text = _error_text(Rejected(reason, "price 142.41 is more than 5% from the mark 150.00"))
        assert reason.name not in text, (reason, text)
    assert _error_text(Rejected(RejectReason.INSUFFICIENT_MARGIN, "x")) == "Insufficient margin to place order."
    assert _error_text(Rejected(RejectReason.OUTSIDE_PRICE_BAND, "price 142.41 is more than 5% from the mark 150.00")) \
        == "Price 142.41 is more than 5% from the mark 150.00"


def test_a_stop_that_fired_before_its_placement_was_answered_is_answered_new_and_queried_triggered():
    """Freqtrade took a placement answered TRIGGERED for a closed order and placed its stop
    again, 30 times in 3 minutes. Binance answers a placement NEW; the next query tells."""
    from schemas.enums import Condition, SelfTradePrevention, TriggerSource
    from schemas.events import OrderTriggered
    from services.gateway.binance.algo import accepted_json
    from services.gateway.binance.wire import algo_json

    ledger = Ledger(default_markets())
    ledger.apply(OrderAccepted("match.SOL-PERP", 1, "SOL-PERP", "bot", 7, "stop-1", Side.SELL, OrderType.MARKET,
                               TimeInForce.IOC, 0, 100, True, 1, Condition.STOP, 14000, TriggerSource.MARK))
    ledger.apply(OrderTriggered("match.SOL-PERP", 2, "SOL-PERP", "bot", 7, "stop-1", Side.SELL, OrderType.MARKET,
                                TimeInForce.IOC, 0, 100, True, SelfTradePrevention.CANCEL_TAKER, Condition.STOP,
                                14000, 13990, TriggerSource.MARK, 2))
    order = ledger.conditionals[7]
    answer = accepted_json(order)
    assert (answer["algoStatus"], answer["actualOrderId"], answer["triggerTime"]) == ("NEW", "", 0)
    assert answer["clientAlgoId"] == "stop-1" and answer["triggerPrice"] == "140.00"
    queried = algo_json(order)
    assert (queried["algoStatus"], queried["actualOrderId"]) == ("TRIGGERED", "7")
