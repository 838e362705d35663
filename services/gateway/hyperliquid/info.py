"""Hyperliquid's ``POST /info``: the read side of its API, with its field names and number
formats, over the gateway's projection (market data) and ledger (accounts).

Markets are named by coin: perpsim's ``BTC-PERP`` is ``BTC``, quoted in USDC, asset
``0, 1, ...`` in the order of ``meta``'s universe (perpsim's market order). Accounts are
addresses: a perpsim account id such as ``0x5e9e...`` (lower case) is that wallet's
account. Numbers are decimal strings, as Hyperliquid sends them; times are milliseconds.

Served: ``meta``, ``metaAndAssetCtxs``, ``spotMeta``, ``spotMetaAndAssetCtxs`` (no spot
markets), ``perpDexs``, ``exchangeStatus``, ``allMids``, ``l2Book``,
``clearinghouseState``, ``openOrders``, ``frontendOpenOrders``, ``orderStatus``,
``userFills``, ``userFillsByTime``, ``historicalOrders``, ``fundingHistory``,
``userFunding``, ``candleSnapshot``, ``userFees``, ``userAbstraction``. Any other type is
answered as Hyperliquid answers a body it cannot read: HTTP 422, "Failed to deserialize
the JSON body into the target type".
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from exchange.markets import Market
from schemas.enums import Condition, IncomeKind, MarginMode, Side
from services.gateway.host import GatewayHost
from services.gateway.ledger import (
    FORCED_ORDER_BASE,
    LIVE,
    ConditionalStatus,
    OrderKind,
    OrderStatus,
    entry_price,
    money,
)
from services.gateway.projection import aggregate

UNREADABLE = "Failed to deserialize the JSON body into the target type"
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# a trigger order's status, in Hyperliquid's words (ccxt reads "triggered" as open)
TRIGGER_STATUS = {ConditionalStatus.WAITING: "open", ConditionalStatus.TRIGGERED: "triggered",
                  ConditionalStatus.FINISHED: "filled", ConditionalStatus.REJECTED: "rejected",
                  ConditionalStatus.CANCELED: "canceled", ConditionalStatus.EXPIRED: "canceled"}
INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
                "2h": 7_200_000, "4h": 14_400_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
                "3d": 259_200_000, "1w": 604_800_000}


def coin(market: Market) -> str:
    return market.base


def direction(start: int, change: int) -> str:
    """Hyperliquid's ``dir`` of a trade that moves a position from ``start`` by ``change``."""
    after = start + change
    if change > 0:
        if start >= 0:
            return "Open Long"
        return "Close Short" if after <= 0 else "Short > Long"
    if start <= 0:
        return "Open Short"
    return "Close Long" if after >= 0 else "Long > Short"


def _number(text: str) -> str:
    """A decimal string without trailing zeros ("150.50" -> "150.5", "3.0" -> "3.0")."""
    value = Decimal(text).normalize()
    out = format(value, "f")
    return out if "." in out else out + ".0"


def usd(micro: int) -> str:
    return money(micro)


class Unreadable(Exception):
    """A body Hyperliquid would not deserialize."""


class HyperliquidInfo:
    """``POST /info`` of a ``Gateway`` (its projection and ledger)."""

    def __init__(self, host: GatewayHost):
        self.host = host
        self.markets = host.markets
        self.by_coin = {coin(market): market for market in self.markets.values()}
        # the request types answered, by the name Hyperliquid gives them: only these are reachable
        # from the wire (a helper's name in "type" is refused like any unknown type)
        self.handlers: dict[str, Callable[[dict], Any]] = {
            "meta": self._meta,
            "metaAndAssetCtxs": self._metaAndAssetCtxs,
            "spotMeta": self._spotMeta,
            "spotMetaAndAssetCtxs": self._spotMetaAndAssetCtxs,
            "perpDexs": self._perpDexs,
            "exchangeStatus": self._exchangeStatus,
            "allMids": self._allMids,
            "l2Book": self._l2Book,
            "fundingHistory": self._fundingHistory,
            "candleSnapshot": self._candleSnapshot,
            "clearinghouseState": self._clearinghouseState,
            "openOrders": self._openOrders,
            "frontendOpenOrders": self._frontendOpenOrders,
            "orderStatus": self._orderStatus,
            "historicalOrders": self._historicalOrders,
            "userFills": self._userFills,
            "userFillsByTime": self._userFillsByTime,
            "userFunding": self._userFunding,
            "userFees": self._userFees,
            "userAbstraction": self._userAbstraction,
        }

    def routes(self) -> list:
        return [web.post("/info", self.info)]

    async def info(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.answer(json.loads(await request.text() or "null")))
        except (Unreadable, ValueError):
            return web.Response(status=422, text=UNREADABLE)

    def answer(self, body: Any) -> Any:
        """The answer to ``body`` (the JSON of ``POST /info``, or the payload of a
        WebSocket ``post`` info request); ``Unreadable`` for what Hyperliquid refuses."""
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            raise Unreadable
        handler = self.handlers.get(body["type"])
        if handler is None:
            raise Unreadable
        try:
            return handler(body)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Unreadable from None

    # ------------------------------------------------------------------ helpers

    def _market(self, name: Any) -> Market:
        market = self.by_coin.get(name) if isinstance(name, str) else None
        if market is None:
            raise Unreadable
        return market

    def _user(self, body: dict) -> str:
        """An address: 20 bytes in hex. Anything else ("0x12") is a body Hyperliquid cannot
        read (422); before, it was answered 200 with an empty account."""
        user = body.get("user")
        if not isinstance(user, str) or not ADDRESS.match(user):
            raise Unreadable
        return user.lower()

    def _size_decimals(self, market: Market) -> int:
        return max(0, -market.lot_size.normalize().as_tuple().exponent)

    def _price(self, market: Market, ticks: int) -> str:
        return _number(market.format_price(ticks))

    def _size(self, market: Market, lots: int) -> str:
        return _number(market.format_size(lots))

    # --------------------------------------------------------------- market data

    def _universe(self) -> list[dict]:
        return [{"name": coin(m), "szDecimals": self._size_decimals(m), "maxLeverage": m.max_leverage,
                 "marginTableId": index, "onlyIsolated": False, "isDelisted": False}
                for index, m in enumerate(self.markets.values())]

    def _margin_tables(self) -> list:
        return [[index, {"description": f"{coin(m)} tiers",
                         "marginTiers": [{"lowerBound": str(t.floor // 1_000_000), "maxLeverage": t.max_leverage}
                                         for t in m.tiers]}]
                for index, m in enumerate(self.markets.values())]

    def _meta(self, body: dict) -> dict:
        return {"universe": self._universe(), "marginTables": self._margin_tables(), "collateralToken": 0}

    def _asset_context(self, market: Market) -> dict:
        state = self.host.projection.markets[market.symbol]
        (bid, _), (ask, _) = self.host.projection.best(market.symbol)
        day = [c for c in state.candles if c[0] >= int(time.time() * 1000) - 86_400_000]
        previous = day[0][1] if day else state.mark
        open_interest = sum(p.signed_size for account in self.host.ledger.accounts.values() if account.snapshot
                            for p in account.snapshot.positions if p.market == market.symbol and p.signed_size > 0)
        return {"funding": f"{state.funding_rate_ppb / 1e9:.8f}", "openInterest": self._size(market, open_interest),
                "prevDayPx": self._price(market, previous), "dayNtlVlm": usd(sum(c[6] for c in day)),
                "premium": f"{(state.mark - state.index) / state.index:.8f}" if state.index else "0.0",
                "oraclePx": self._price(market, state.index), "markPx": self._price(market, state.mark),
                "midPx": self._price(market, (bid + ask) // 2) if bid and ask else None,
                "impactPxs": [self._price(market, bid), self._price(market, ask)] if bid and ask else None,
                "dayBaseVlm": self._size(market, sum(c[5] for c in day))}

    def _metaAndAssetCtxs(self, body: dict) -> list:
        return [self._meta(body), [self._asset_context(m) for m in self.markets.values()]]

    def _spotMeta(self, body: dict) -> dict:
        return {"universe": [], "tokens": [{"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0,
                                            "tokenId": "0x6d1e7cde53ba9467b783cb7c530ce054", "isCanonical": True,
                                            "evmContract": None, "fullName": None}]}

    def _spotMetaAndAssetCtxs(self, body: dict) -> list:
        return [self._spotMeta(body), []]

    def _perpDexs(self, body: dict) -> list:
        return [None]

    def _exchangeStatus(self, body: dict) -> dict:
        return {"time": int(time.time() * 1000), "specialStatuses": None}

    def _allMids(self, body: dict) -> dict:
        mids = {}
        for market in self.markets.values():
            (bid, _), (ask, _) = self.host.projection.best(market.symbol)
            mid = (bid + ask) / 2 if bid and ask else self.host.projection.markets[market.symbol].mark
            if mid:
                mids[coin(market)] = _number(str(Decimal(str(mid)) * market.tick_size))
        return mids

    def _l2Book(self, body: dict) -> dict:
        market = self._market(body.get("coin"))
        bids, asks = self.host.projection.depth(market.symbol, 20)
        return {"coin": coin(market), "time": int(time.time() * 1000),
                "levels": [[{"px": self._price(market, p), "sz": self._size(market, s), "n": 1} for p, s in side]
                           for side in (bids, asks)]}

    def _fundingHistory(self, body: dict) -> list:
        market = self._market(body.get("coin"))
        start, end = int(body.get("startTime", 0)), body.get("endTime")
        state = self.host.projection.markets[market.symbol]
        return [{"coin": coin(market), "fundingRate": f"{rate / 1e9:.8f}", "premium": "0.0", "time": ts // 1_000_000}
                for ts, rate, _ in state.funding_history
                if ts // 1_000_000 >= start and (end is None or ts // 1_000_000 <= int(end))]

    def _candleSnapshot(self, body: dict) -> list:
        request = body.get("req")
        if not isinstance(request, dict):
            raise Unreadable
        market = self._market(request.get("coin"))
        interval = INTERVALS_MS.get(request.get("interval"))
        if interval is None:
            raise Unreadable
        start, end = int(request.get("startTime", 0)), request.get("endTime")
        state = self.host.projection.markets[market.symbol]
        candles = aggregate(state.candles, interval, start, int(end) if end is not None else None, 5000)
        return [self.candle(market, request["interval"], c) for c in candles]

    def candle(self, market: Market, interval: str, c: list) -> dict:
        """One candle (the projection's row, prices in ticks) in Hyperliquid's form."""
        return {"t": c[0], "T": c[0] + INTERVALS_MS[interval] - 1, "s": coin(market), "i": interval,
                "o": self._price(market, c[1]), "c": self._price(market, c[4]), "h": self._price(market, c[2]),
                "l": self._price(market, c[3]), "v": self._size(market, c[5]), "n": c[7]}

    def latest_candle(self, market: Market, interval: str) -> dict | None:
        """The newest candle of ``interval``, from the one-minute candles it spans only."""
        candles = self.host.projection.markets[market.symbol].candles
        if not candles:
            return None
        length = INTERVALS_MS[interval]
        opened = candles[-1][0] // length * length
        tail = []
        for one in reversed(candles):
            if one[0] < opened:
                break
            tail.append(one)
        return self.candle(market, interval, aggregate(reversed(tail), length, opened, None, 1)[0])

    # ------------------------------------------------------------------ accounts

    def _clearinghouseState(self, body: dict) -> dict:
        user = self._user(body)
        snapshot = self.host.ledger.valued(user)
        positions, total_ntl, cross_ntl, margin_used, cross_margin_used = [], 0, 0, 0, 0
        cross_mm = next((b.maintenance_margin for b in snapshot.buckets if not b.market), 0)
        funding = self._funding_by_market(user)
        for state in snapshot.positions:
            market = self.markets[state.market]
            value = abs(state.signed_size) * state.mark_price * market.value_per_tick_lot
            isolated = state.mode is MarginMode.ISOLATED
            used = state.isolated_margin + state.unrealized_pnl if isolated else state.initial_margin
            leverage = {"type": "isolated" if isolated else "cross", "value": state.leverage}
            if isolated:
                leverage["rawUsd"] = usd(used - state.signed_size * state.mark_price * market.value_per_tick_lot)
            total_ntl += value
            margin_used += used
            if not isolated:
                cross_ntl += value
                cross_margin_used += used
            paid = funding.get(state.market, 0)
            positions.append({"type": "oneWay", "position": {
                "coin": coin(market), "szi": self._size(market, state.signed_size), "leverage": leverage,
                "entryPx": _number(entry_price(market, state)), "positionValue": usd(value),
                "unrealizedPnl": usd(state.unrealized_pnl),
                "returnOnEquity": f"{state.unrealized_pnl / state.initial_margin:.8f}" if state.initial_margin else "0.0",
                "liquidationPx": self._price(market, state.liquidation_price) if state.liquidation_price else None,
                "marginUsed": usd(used), "maxLeverage": market.max_leverage,
                "cumFunding": {"allTime": usd(paid), "sinceOpen": usd(paid), "sinceChange": usd(paid)}}})
        cross_value = next((b.equity for b in snapshot.buckets if not b.market), snapshot.balance)
        isolated_value = sum(p.isolated_margin + p.unrealized_pnl for p in snapshot.positions
                             if p.mode is MarginMode.ISOLATED)
        signed = sum(p.signed_size * p.mark_price * self.markets[p.market].value_per_tick_lot for p in snapshot.positions)
        cross_signed = sum(p.signed_size * p.mark_price * self.markets[p.market].value_per_tick_lot
                           for p in snapshot.positions if p.mode is not MarginMode.ISOLATED)
        account_value = cross_value + isolated_value
        return {"marginSummary": {"accountValue": usd(account_value), "totalNtlPos": usd(total_ntl),
                                  "totalRawUsd": usd(account_value - signed), "totalMarginUsed": usd(margin_used)},
                "crossMarginSummary": {"accountValue": usd(cross_value), "totalNtlPos": usd(cross_ntl),
                                       "totalRawUsd": usd(cross_value - cross_signed),
                                       "totalMarginUsed": usd(cross_margin_used)},
                "crossMaintenanceMarginUsed": usd(cross_mm), "withdrawable": usd(snapshot.withdrawable),
                "assetPositions": positions, "time": int(time.time() * 1000)}

    def _funding_by_market(self, user: str) -> dict[str, int]:
        paid: dict[str, int] = {}
        for _, item in self.host.ledger.account(user).income:
            if item.kind is IncomeKind.FUNDING_FEE:
                paid[item.market] = paid.get(item.market, 0) - item.amount
        return paid

    def _order(self, order) -> dict:
        market = order.market
        return {"coin": coin(market), "side": "B" if order.side is Side.BUY else "A",
                "limitPx": self._price(market, order.price), "sz": self._size(market, order.size - order.executed),
                "oid": order.order_id, "timestamp": order.time_ms, "origSz": self._size(market, order.size),
                "cloid": order.client_order_id if order.client_order_id.startswith("0x") else None}

    def _frontend_order(self, order) -> dict:
        return {**self._order(order), "orderType": "Limit" if order.kind is OrderKind.LIMIT else "Market",
                "reduceOnly": order.reduce_only, "isTrigger": False, "triggerPx": "0.0", "triggerCondition": "N/A",
                "isPositionTpsl": False, "tif": {"GTC": "Gtc", "IOC": "Ioc", "POST_ONLY": "Alo"}.get(
                    order.tif.name, "Gtc"), "children": []}

    def _trigger(self, order) -> dict:
        """A waiting conditional (trigger) order, in openOrders' shape."""
        market = order.market
        stop = order.condition is Condition.STOP
        above = (order.side is Side.BUY) == stop  # a buy stop and a sell take-profit fire on a rise
        kind = ("Stop" if stop else "Take Profit") + (" Limit" if order.kind is OrderKind.LIMIT else " Market")
        return {"coin": coin(market), "side": "B" if order.side is Side.BUY else "A",
                "limitPx": self._price(market, order.price or order.trigger_price),
                "sz": self._size(market, order.size), "oid": order.order_id, "timestamp": order.time_ms,
                "origSz": self._size(market, order.size), "cloid": None, "orderType": kind,
                "reduceOnly": order.reduce_only, "isTrigger": True, "triggerPx": self._price(market, order.trigger_price),
                "triggerCondition": f"Price {'above' if above else 'below'} {self._price(market, order.trigger_price)}",
                "isPositionTpsl": False, "tif": None, "children": []}

    def _openOrders(self, body: dict) -> list:
        user = self._user(body)
        return [self._order(o) for o in self.host.ledger.open_orders(user)] + \
            [{k: v for k, v in self._trigger(o).items() if k in ("coin", "side", "limitPx", "sz", "oid", "timestamp",
                                                                  "origSz", "cloid")}
             for o in self.host.ledger.open_conditionals(user)]

    def _frontendOpenOrders(self, body: dict) -> list:
        user = self._user(body)
        return [self._frontend_order(o) for o in self.host.ledger.open_orders(user)] + \
            [self._trigger(o) for o in self.host.ledger.open_conditionals(user)]

    def _status(self, order) -> str:
        if order.status in LIVE:
            return "open"
        return "filled" if order.status is OrderStatus.FILLED else "canceled"

    def _orderStatus(self, body: dict) -> dict:
        """Any order the account had, by oid or cloid: a plain one, or a trigger order (a
        fired one is answered as the order it became, which keeps its oid, as on
        Hyperliquid). Before, a resting or cancelled stop answered ``unknownOid`` while
        ``frontendOpenOrders`` listed it, and Freqtrade placed a fresh stop every 35 s."""
        user, oid = self._user(body), body.get("oid")
        ledger = self.host.ledger

        def find(orders: dict):
            return orders.get(oid) if isinstance(oid, int) else next(
                (o for o in orders.values() if o.client_order_id == oid), None)

        order = find(ledger.by_account.get(user, {}))
        if order is not None:
            return {"status": "order", "order": self._status_entry(order)}
        trigger = find(ledger.conditionals_of.get(user, {}))
        if trigger is not None:
            return {"status": "order", "order": self._trigger_entry(trigger)}
        return {"status": "unknownOid"}

    def _status_entry(self, order) -> dict:
        return {"order": self._frontend_order(order), "status": self._status(order),
                "statusTimestamp": order.update_ms or order.time_ms}

    def _trigger_entry(self, order) -> dict:
        return {"order": self._trigger(order), "status": TRIGGER_STATUS[order.status],
                "statusTimestamp": order.update_ms or order.time_ms}

    def _historicalOrders(self, body: dict) -> list:
        user = self._user(body)
        ledger = self.host.ledger
        fired = ledger.by_account.get(user, {})
        entries = [(o.time_ms, self._status_entry(o)) for o in list(fired.values())[-2000:]]
        triggers = list(ledger.conditionals_of.get(user, {}).values())[-2000:]
        entries += [(o.time_ms, self._trigger_entry(o)) for o in triggers
                    if o.order_id not in fired]  # a fired one is listed as the order it became
        return [entry for _, entry in sorted(entries, key=lambda pair: pair[0])[-2000:]]

    def fill(self, trade) -> dict:
        """One of the ledger's trades as a Hyperliquid fill: its direction from the position
        before it ("Close Long", "Long > Short" ...), and a forced close's ``liquidation``."""
        market = trade.market
        answer = {"coin": coin(market), "px": self._price(market, trade.price),
                  "sz": self._size(market, trade.size), "side": "B" if trade.side is Side.BUY else "A",
                  "time": trade.time_ms, "startPosition": _number(market.format_size(trade.start)),
                  "dir": direction(trade.start, trade.size if trade.side is Side.BUY else -trade.size),
                  "closedPnl": usd(trade.realized), "hash": f"0x{trade.trade_id:064x}", "oid": trade.order_id,
                  "crossed": not trade.maker, "fee": usd(trade.commission), "tid": trade.trade_id, "feeToken": "USDC"}
        if trade.forced:
            mark = self.host.projection.markets[market.symbol].mark
            answer["liquidation"] = {"liquidatedUser": trade.account, "markPx": self._price(market, mark or trade.price),
                                     "method": "market" if trade.order_id < FORCED_ORDER_BASE else "backstop"}
        return answer

    def _fills(self, user: str, start: int = 0, end: int | None = None) -> list:
        trades = self.host.ledger.account(user).trades
        return [self.fill(t) for t in reversed(trades)  # newest first, as Hyperliquid
                if t.time_ms >= start and (end is None or t.time_ms <= end)]

    def _userFills(self, body: dict) -> list:
        return self._fills(self._user(body))[:2000]

    def _userFillsByTime(self, body: dict) -> list:
        end = body.get("endTime")
        return self._fills(self._user(body), int(body.get("startTime", 0)), int(end) if end is not None else None)[:2000]

    def _userFunding(self, body: dict) -> list:
        user = self._user(body)
        start, end = int(body.get("startTime", 0)), body.get("endTime")
        rows = []
        for _, item in self.host.ledger.account(user).income:
            when = item.ts // 1_000_000
            if item.kind is IncomeKind.FUNDING_FEE and when >= start and (end is None or when <= int(end)):
                market = self.markets[item.market]
                rows.append({"time": when, "hash": "0x" + "0" * 64,
                             "delta": {"type": "funding", "coin": coin(market), "usdc": usd(item.amount),
                                       "szi": "0.0", "fundingRate": "0.0"}})
        return rows

    def _userFees(self, body: dict) -> dict:
        self._user(body)
        market = next(iter(self.markets.values()))
        return {"dailyUserVlm": [], "feeSchedule": {}, "userCrossRate": f"{market.taker_fee_ppm / 1e6:.6f}",
                "userAddRate": f"{market.maker_fee_ppm / 1e6:.6f}", "activeReferralDiscount": "0.0"}

    def _userAbstraction(self, body: dict) -> str:
        self._user(body)
        return "disabled"
