"""Binance's wire format for what the ledger knows: symbols, orders, trades, income
names and the user data stream's payloads (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE,
MARGIN_CALL)."""

from __future__ import annotations

from exchange.markets import Market
from schemas.enums import IncomeKind, MarginMode, Side, TimeInForce
from services.gateway.ledger import (
    AccountUpdate,
    MarginCall,
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


def binance_symbol(market: Market) -> str:
    return f"{market.base}USDT"


def tif_name(tif: TimeInForce) -> str:
    return "GTX" if tif is TimeInForce.POST_ONLY else tif.name


def order_json(order: OrderView) -> dict:
    market = order.market
    return {"orderId": order.order_id, "symbol": binance_symbol(market), "status": order.status,
            "clientOrderId": order.client_order_id,
            "price": market.format_price(order.price if order.kind == "LIMIT" else 0),
            "avgPrice": order.average(),
            "origQty": market.format_size(order.size), "executedQty": market.format_size(order.executed),
            "cumQuote": money(order.quote), "timeInForce": tif_name(order.tif), "type": order.kind,
            "reduceOnly": order.reduce_only, "closePosition": False, "side": order.side.name,
            "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": order.kind, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_TAKER",
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


def user_event(event: UserEvent, markets: dict[str, Market]) -> dict:
    """The user data stream payload of a ledger event."""
    if isinstance(event, OrderUpdate):
        return _order_update(event)
    if isinstance(event, AccountUpdate):
        return _account_update(event, markets)
    return _margin_call(event, markets)


def _order_update(event: OrderUpdate) -> dict:
    order, trade, when = event.order, event.trade, event.when
    market = order.market
    return {"e": "ORDER_TRADE_UPDATE", "E": when, "T": when, "o": {
        "s": binance_symbol(market), "c": order.client_order_id, "S": order.side.name, "o": order.kind,
        "f": tif_name(order.tif), "q": market.format_size(order.size),
        "p": market.format_price(order.price if order.kind == "LIMIT" else 0),
        "ap": order.average(), "sp": "0",
        "x": event.execution, "X": order.status, "i": order.order_id,
        "l": market.format_size(trade.size if trade else 0), "z": market.format_size(order.executed),
        "L": market.format_price(trade.price if trade else 0), "N": "USDT",
        "n": money(trade.commission if trade else 0), "T": when, "t": trade.trade_id if trade else 0,
        "b": "0", "a": "0", "m": trade.maker if trade else False, "R": order.reduce_only,
        "wt": "CONTRACT_PRICE", "ot": order.kind, "ps": "BOTH", "cp": False,
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


def _margin_call(event: MarginCall, markets: dict[str, Market]) -> dict:
    calls = []
    for position in event.positions:
        market = markets[position.market]
        calls.append({"s": binance_symbol(market), "ps": "BOTH", "pa": market.format_size(position.signed_size),
                      "mt": "ISOLATED" if position.mode is MarginMode.ISOLATED else "CROSSED",
                      "iw": money(position.isolated_margin), "mp": market.format_price(position.mark_price),
                      "up": money(position.unrealized_pnl), "mm": money(position.maintenance_margin)})
    return {"e": "MARGIN_CALL", "E": ms(event.snapshot.ts), "cw": money(event.snapshot.balance), "p": calls}
