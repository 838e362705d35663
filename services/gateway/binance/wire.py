"""Binance's wire format for what the ledger knows: symbols, Binance's words for statuses
and order types, the ids it gives forced closes, orders, trades, income names and the user
data stream's payloads (ORDER_TRADE_UPDATE, ALGO_UPDATE, ACCOUNT_UPDATE, MARGIN_CALL)."""

from __future__ import annotations

from dataclasses import dataclass

from exchange.markets import Market
from schemas.enums import (
    Condition,
    IncomeKind,
    MarginMode,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import MarginSnapshot
from services.gateway.ledger import (
    FIRED,
    FORCED,
    AccountUpdate,
    ConditionalStatus,
    ConditionalUpdate,
    ConditionalView,
    Execution,
    OrderKind,
    OrderStatus,
    OrderUpdate,
    OrderView,
    TradeView,
    UserEvent,
    entry_price,
    money,
    ms,
)

INCOME_NAMES = {IncomeKind.TRANSFER: "TRANSFER", IncomeKind.REALIZED_PNL: "REALIZED_PNL",
                IncomeKind.COMMISSION: "COMMISSION", IncomeKind.FUNDING_FEE: "FUNDING_FEE",
                IncomeKind.INSURANCE_CLEAR: "INSURANCE_CLEAR"}


ORDER_STATUS = {OrderStatus.NEW: "NEW", OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
                OrderStatus.FILLED: "FILLED", OrderStatus.CANCELED: "CANCELED", OrderStatus.EXPIRED: "EXPIRED"}
EXECUTION = {Execution.NEW: "NEW", Execution.TRADE: "TRADE", Execution.AMENDMENT: "AMENDMENT",
             Execution.FILLED: "FILLED", Execution.CANCELED: "CANCELED", Execution.EXPIRED: "EXPIRED"}
ALGO_STATUS = {ConditionalStatus.WAITING: "NEW", ConditionalStatus.TRIGGERED: "TRIGGERED",
               ConditionalStatus.FINISHED: "FINISHED", ConditionalStatus.REJECTED: "REJECTED",
               ConditionalStatus.CANCELED: "CANCELED", ConditionalStatus.EXPIRED: "EXPIRED"}
# a forced close (liquidation, ADL) is a LIMIT IOC order on Binance, its client order id saying
# what it is; there is no LIQUIDATION type (nautilus_trader's decoder refuses a message with one)
ORDER_TYPE = {OrderKind.LIMIT: "LIMIT", OrderKind.MARKET: "MARKET", OrderKind.LIQUIDATION: "LIMIT",
              OrderKind.ADL: "LIMIT"}


def shown_client_id(order: OrderView) -> str:
    """An order's client order id; Binance names a forced close itself: ``autoclose-<time
    ms><number>`` for a liquidation order (the liquidation engine's, or one side of a
    backstop transfer), ``adl_autoclose`` for ADL."""
    if order.kind is OrderKind.ADL:
        return "adl_autoclose"
    if order.kind is OrderKind.LIQUIDATION:
        if order.trade_id:  # a backstop transfer's side
            return f"autoclose-{order.time_ms}{order.trade_id}"
        return f"autoclose-{order.time_ms}{order.order_id >> 16:06d}"
    return order.client_order_id


def shown_price(order: OrderView) -> str:
    """An order's price as Binance shows it: a limit order's own; a market order's 0; a
    forced close's (a LIMIT IOC order on Binance, at the bankruptcy price) its average fill
    price, at the tick, where the liquidation engine sent it at no price of its own
    (nautilus_trader books a liquidation's fill at this price)."""
    market = order.market
    if order.kind is OrderKind.MARKET:
        return market.format_price(0)
    if order.kind in FORCED and not order.price and order.executed:
        return market.format_price(round(order.quote / (order.executed * market.value_per_tick_lot)))
    return market.format_price(order.price)


def binance_symbol(market: Market) -> str:
    return f"{market.base}USDT"


def tif_name(tif: TimeInForce) -> str:
    return "GTX" if tif is TimeInForce.POST_ONLY else tif.name


WORKING_TYPES = {TriggerSource.MARK: "MARK_PRICE", TriggerSource.LAST: "CONTRACT_PRICE"}
# Binance numbers algo orders apart from the orders they become; so does the gateway: an
# algo id is the exchange's order id plus this (below 2**53, so JavaScript clients read it
# exactly), and the order it becomes keeps the order id (``actualOrderId``).
ALGO_ID_OFFSET = 1 << 52


def algo_id(order: ConditionalView) -> int:
    return order.order_id + ALGO_ID_OFFSET


def algo_type(order: ConditionalView) -> str:
    """Binance's order type of a conditional order."""
    if order.condition is Condition.TRAILING_STOP:
        return "TRAILING_STOP_MARKET"
    name = "STOP" if order.condition is Condition.STOP else "TAKE_PROFIT"
    return name if order.kind is OrderKind.LIMIT else f"{name}_MARKET"


def _percent(ppm: int) -> str:
    return f"{ppm / 10_000:.1f}" if ppm else ""


def algo_json(order: ConditionalView) -> dict:
    """An algo order as Binance's ``/fapi/v1/algoOrder`` answers it."""
    market = order.market
    trailing = order.condition is Condition.TRAILING_STOP
    return {"algoId": algo_id(order), "clientAlgoId": order.client_order_id, "algoType": "CONDITIONAL",
            "orderType": algo_type(order), "symbol": binance_symbol(market), "side": order.side.name,
            "positionSide": "BOTH", "timeInForce": tif_name(order.tif) if order.kind is OrderKind.LIMIT else "GTC",
            "quantity": market.format_size(order.size), "algoStatus": ALGO_STATUS[order.status],
            "triggerPrice": market.format_price(order.trigger_price) if not trailing else "0",
            "price": market.format_price(order.price if order.kind is OrderKind.LIMIT else 0),
            "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_TAKER",
            "workingType": WORKING_TYPES[order.source], "priceMatch": "NONE", "closePosition": order.close_position,
            "priceProtect": False, "reduceOnly": order.reduce_only and not order.close_position,
            "activatePrice": market.format_price(order.activation_price) if order.activation_price else "",
            "callbackRate": _percent(order.callback_ppm),
            "actualOrderId": str(order.order_id) if order.status in FIRED else "",
            "createTime": order.time_ms, "updateTime": order.update_ms or order.time_ms,
            "triggerTime": order.trigger_ms, "goodTillDate": 0, "failedReason": order.reason}


def order_json(order: OrderView) -> dict:
    """An order as Binance's REST answers it; a forced close (liquidation, ADL) is a LIMIT
    IOC order whose client order id says what it is (``autoclose-...``, ``adl_autoclose``)."""
    market = order.market
    kind = ORDER_TYPE[order.kind]
    return {"orderId": order.order_id, "symbol": binance_symbol(market), "status": ORDER_STATUS[order.status],
            "clientOrderId": shown_client_id(order),
            "price": shown_price(order),
            "avgPrice": order.average(),
            "origQty": market.format_size(order.size), "executedQty": market.format_size(order.executed),
            "cumQuote": money(order.quote), "timeInForce": tif_name(order.tif), "type": kind,
            "reduceOnly": order.reduce_only, "closePosition": False, "side": order.side.name,
            "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": kind, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_TAKER",
            "goodTillDate": 0, "time": order.time_ms, "updateTime": order.update_ms or order.time_ms}


def trade_json(trade: TradeView) -> dict:
    market = trade.market
    return {"symbol": binance_symbol(market), "id": trade.trade_id, "orderId": trade.order_id,
            "side": trade.side.name, "price": market.format_price(trade.price),
            "qty": market.format_size(trade.size),
            "realizedPnl": money(trade.realized), "marginAsset": "USDT",
            "quoteQty": money(trade.price * trade.size * market.value_per_tick_lot),
            "commission": money(trade.commission), "commissionAsset": "USDT", "time": trade.time_ms,
            "positionSide": "BOTH", "buyer": trade.side is Side.BUY, "maker": trade.maker}


@dataclass(frozen=True, slots=True)
class MarginCall:
    """Binance's margin call: buckets whose maintenance margin reached its threshold of
    their equity (``streams.MarginCalls``); ``snapshot`` valued at the current marks,
    ``positions`` those buckets' positions."""

    snapshot: MarginSnapshot
    positions: list


def user_event(event: UserEvent | MarginCall, markets: dict[str, Market]) -> dict:
    """The user data stream payload of a ledger event."""
    if isinstance(event, OrderUpdate):
        return _order_update(event)
    if isinstance(event, AccountUpdate):
        return _account_update(event, markets)
    if isinstance(event, ConditionalUpdate):
        return _algo_update(event)
    return margin_call_json(event, markets)


def _algo_update(event: ConditionalUpdate) -> dict:
    order = event.order
    market = order.market
    trailing = order.condition is Condition.TRAILING_STOP
    return {"e": "ALGO_UPDATE", "T": event.when, "E": event.when, "o": {
        "caid": order.client_order_id, "aid": algo_id(order), "at": "CONDITIONAL", "o": algo_type(order),
        "s": binance_symbol(market), "S": order.side.name, "ps": "BOTH",
        "f": tif_name(order.tif) if order.kind is OrderKind.LIMIT else "GTC", "q": market.format_size(order.size),
        "X": ALGO_STATUS[order.status], "ai": str(order.order_id) if order.status in FIRED else "",
        "ap": "0", "aq": "0", "act": ORDER_TYPE[order.kind] if order.status in FIRED else "0",
        "tp": market.format_price(order.trigger_price) if not trailing else "0",
        "p": market.format_price(order.price if order.kind is OrderKind.LIMIT else 0), "V": "EXPIRE_TAKER",
        "wt": WORKING_TYPES[order.source], "pm": "NONE", "cp": order.close_position, "pP": False,
        "R": order.reduce_only and not order.close_position, "tt": order.trigger_ms, "gtd": 0,
        "rm": order.reason}}


def _order_update(event: OrderUpdate) -> dict:
    """``ORDER_TRADE_UPDATE``; a forced close is LIMIT IOC, as in the REST answers, and its
    fills are CALCULATED executions."""
    order, trade, when = event.order, event.trade, event.when
    market = order.market
    forced = order.kind in FORCED
    kind = ORDER_TYPE[order.kind]
    return {"e": "ORDER_TRADE_UPDATE", "E": when, "T": when, "o": {
        "s": binance_symbol(market), "c": shown_client_id(order), "S": order.side.name, "o": kind,
        "f": "IOC" if forced else tif_name(order.tif), "q": market.format_size(order.size),
        "p": shown_price(order),
        "ap": order.average(), "sp": "0",
        # a forced close's fill is a CALCULATED execution on Binance (nautilus_trader books
        # a liquidation's fill only from one; a TRADE of an order it never placed is ignored)
        "x": "CALCULATED" if forced and event.execution is Execution.TRADE else EXECUTION[event.execution],
        "X": ORDER_STATUS[order.status], "i": order.order_id,
        "l": market.format_size(trade.size if trade else 0), "z": market.format_size(order.executed),
        "L": market.format_price(trade.price if trade else 0), "N": "USDT",
        "n": money(trade.commission if trade else 0), "T": when, "t": trade.trade_id if trade else 0,
        "b": "0", "a": "0", "m": trade.maker if trade else False, "R": order.reduce_only,
        "wt": "CONTRACT_PRICE", "ot": kind, "ps": "BOTH", "cp": False,
        "rp": money(trade.realized if trade else 0), "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_TAKER",
        "pm": "NONE", "gtd": 0}}


def _account_update(event: AccountUpdate, markets: dict[str, Market]) -> dict:
    snapshot = event.snapshot
    reason = {IncomeKind.TRANSFER: "DEPOSIT", IncomeKind.FUNDING_FEE: "FUNDING_FEE",
              IncomeKind.INSURANCE_CLEAR: "INSURANCE_CLEAR"}.get(
        snapshot.income[-1].kind if snapshot.income else None, "ORDER")
    wallet = snapshot.balance + sum(p.isolated_margin for p in snapshot.positions)
    change = sum(item.amount for item in snapshot.income)
    when = ms(snapshot.ts)
    return {"e": "ACCOUNT_UPDATE", "E": when, "T": when, "a": {
        "m": reason,
        "B": [{"a": "USDT", "wb": money(wallet), "cw": money(snapshot.balance), "bc": money(change)}],
        "P": [_position_update(markets[p.market], p) for p in snapshot.positions]}}


def _position_update(market: Market, position) -> dict:
    entry = entry_price(market, position)
    return {"s": binance_symbol(market), "pa": market.format_size(position.signed_size), "ep": entry,
            "bep": entry, "cr": "0", "up": money(position.unrealized_pnl),
            "mt": "isolated" if position.mode is MarginMode.ISOLATED else "cross",
            "iw": money(position.isolated_margin), "ps": "BOTH"}


def margin_call_json(event: MarginCall, markets: dict[str, Market]) -> dict:
    calls = []
    for position in event.positions:
        market = markets[position.market]
        calls.append({"s": binance_symbol(market), "ps": "BOTH", "pa": market.format_size(position.signed_size),
                      "mt": "ISOLATED" if position.mode is MarginMode.ISOLATED else "CROSSED",
                      "iw": money(position.isolated_margin), "mp": market.format_price(position.mark_price),
                      "up": money(position.unrealized_pnl), "mm": money(position.maintenance_margin)})
    return {"e": "MARGIN_CALL", "E": ms(event.snapshot.ts), "cw": money(event.snapshot.balance), "p": calls}
