"""Hyperliquid's WebSocket (``/ws``): ``{"method": "subscribe" | "unsubscribe",
"subscription": {...}}`` answered with a ``subscriptionResponse`` (or ``error``, as for a
second subscribe of the same thing: "Already subscribed"), ``{"method": "ping"}`` with
``{"channel": "pong"}``, and ``{"method": "post", "id": n, "request": {"type": "info" |
"action", "payload": ...}}`` answered on channel ``post`` as ``/info`` and ``/exchange``
answer (ccxt.pro places and cancels orders that way).

Channels, in Hyperliquid's formats (those of ``/info``): ``l2Book`` (a snapshot at once
and on every change), ``trades``, ``bbo``, ``candle`` (coin and interval: the current
candle at once and on every trade), ``activeAssetCtx`` (the asset context at once and on
every mark), ``allMids``, ``orderUpdates``, ``userFills`` (a snapshot first,
``isSnapshot``), ``userEvents`` (channel ``user``: fills, funding, liquidations),
``userFundings`` and ``clearinghouseState`` (the account at once, on every margin change
and at most once a second as marks move; ccxt.pro's watch_balance and watch_positions).

Every connection has a bounded queue; one that falls ``QUEUE_LIMIT`` messages behind is
closed (1008) rather than growing the gateway's memory, as the Binance streams do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from schemas.enums import IncomeKind, Side
from schemas.events import BBO, BookDelta, BookSnapshot, MarkPrice, Trade
from services.gateway.host import BookLevels, GatewayHost
from services.gateway.hyperliquid.exchange import HyperliquidExchange
from services.gateway.hyperliquid.info import (
    INTERVALS_MS,
    UNREADABLE,
    HyperliquidInfo,
    Unreadable,
    coin,
)
from services.gateway.ledger import FORCED, AccountUpdate, OrderUpdate, UserEvent, money

log = logging.getLogger(__name__)
QUEUE_LIMIT = 10_000
MARKET_CHANNELS = ("l2Book", "trades", "bbo", "activeAssetCtx")
USER_CHANNELS = ("orderUpdates", "userFills", "userEvents", "userFundings", "clearinghouseState")
STATE_EVERY_S = 1.0  # clearinghouseState pushed for mark moves at most this often


class _Connection:
    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.subscriptions: set[tuple[str, str]] = set()  # (type, coin or user or "coin:interval")
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self.posts: set[asyncio.Task] = set()  # actions posted and not yet answered
        self.state_sent: dict[str, float] = {}  # user -> when its clearinghouseState went out
        self.state_due: dict[str, asyncio.TimerHandle] = {}  # user -> a mark move's push, waiting

    def put(self, channel: str, data: Any) -> bool:
        try:
            self.queue.put_nowait({"channel": channel, "data": data})
            return True
        except asyncio.QueueFull:
            return False


class HyperliquidStreams:
    """The WebSocket of the Hyperliquid dialect: fed by the gateway's market data and the
    ledger's user events (it is one of the gateway's taps)."""

    def __init__(self, host: GatewayHost, info: HyperliquidInfo, exchange: HyperliquidExchange):
        self.host, self.info, self.exchange = host, info, exchange
        self.connections: set[_Connection] = set()

    def routes(self) -> list:
        return [web.get("/ws", self.handle)]

    async def close(self) -> None:
        for connection in list(self.connections):
            await connection.ws.close()

    # ------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        connection = _Connection(ws)
        self.connections.add(connection)
        writer = asyncio.create_task(self._write(connection))
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    self._request(connection, message.data)
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            self.connections.discard(connection)
            writer.cancel()
            for task in connection.posts:
                task.cancel()
            for handle in connection.state_due.values():
                handle.cancel()
        return ws

    async def _write(self, connection: _Connection) -> None:
        while True:
            payload = await connection.queue.get()
            await connection.ws.send_str(json.dumps(payload))

    def _send(self, connection: _Connection, channel: str, data: Any) -> None:
        if not connection.put(channel, data):
            self.connections.discard(connection)
            asyncio.get_running_loop().create_task(connection.ws.close(code=1008, message=b"too slow"))

    def _request(self, connection: _Connection, text: str) -> None:
        try:
            request = json.loads(text)
            method = request.get("method")
            if method == "ping":
                return self._send(connection, "pong", None)
            if method == "post":
                return self._post(connection, request)
            subscription = request.get("subscription")
            if method not in ("subscribe", "unsubscribe") or not isinstance(subscription, dict):
                raise Unreadable
            kind, key = subscription.get("type"), self._key(subscription)
        except (Unreadable, ValueError, AttributeError, TypeError):
            return self._send(connection, "error", f"Error parsing JSON into valid websocket request: {text}")
        known = (kind, key) in connection.subscriptions
        if method == "subscribe" and known:
            return self._send(connection, "error", f"Already subscribed: {json.dumps(subscription)}")
        if method == "unsubscribe" and not known:
            return self._send(connection, "error", f"Already unsubscribed: {json.dumps(subscription)}")
        if method == "unsubscribe":
            connection.subscriptions.discard((kind, key))
        else:
            connection.subscriptions.add((kind, key))
        self._send(connection, "subscriptionResponse", {"method": method, "subscription": subscription})
        if method == "subscribe":
            self._first(connection, kind, key)

    def _key(self, subscription: dict) -> str:
        """What a subscription is to: a coin, a user, ``coin:interval`` or nothing."""
        kind = subscription.get("type")
        if kind in MARKET_CHANNELS:
            return coin(self.info._market(subscription.get("coin")))
        if kind == "candle":
            if subscription.get("interval") not in INTERVALS_MS:
                raise Unreadable
            return f"{coin(self.info._market(subscription.get('coin')))}:{subscription['interval']}"
        if kind in USER_CHANNELS:
            if subscription.get("dex") not in (None, ""):  # perpsim has one perp dex, the first
                raise Unreadable
            return self.info._user(subscription)
        if kind == "allMids":
            return ""
        raise Unreadable

    def _post(self, connection: _Connection, request: dict) -> None:
        """A request posted on the socket: info answered at once, an action when it is."""
        ident, inner = request.get("id"), request.get("request")
        kind = inner.get("type") if isinstance(inner, dict) else None
        payload = inner.get("payload") if isinstance(inner, dict) else None
        if kind == "info":
            try:
                answer = {"type": "info", "payload": {"type": payload["type"], "data": self.info.answer(payload)}}
            except (Unreadable, TypeError, KeyError):
                answer = {"type": "error", "payload": UNREADABLE}
            return self._send(connection, "post", {"id": ident, "response": answer})
        if kind != "action":
            return self._send(connection, "post", {"id": ident, "response": {"type": "error",
                                                                             "payload": UNREADABLE}})

        async def act() -> None:
            answer = await self.exchange.answer(payload)
            self._send(connection, "post", {"id": ident, "response": {"type": "action", "payload": answer}})

        task = asyncio.get_running_loop().create_task(act())
        connection.posts.add(task)
        task.add_done_callback(connection.posts.discard)

    def _first(self, connection: _Connection, kind: str, key: str) -> None:
        """What a subscription gets at once: the book, the mids, the fills so far, the
        asset context, the current candle, the account."""
        if kind == "l2Book":
            self._send(connection, "l2Book", self.info._l2Book({"coin": key}))
        elif kind == "allMids":
            self._send(connection, "allMids", {"mids": self.info._allMids({})})
        elif kind == "userFills":
            self._send(connection, "userFills", {"isSnapshot": True, "user": key,
                                                 "fills": self.info._fills(key)[:2000]})
        elif kind == "activeAssetCtx":
            self._send(connection, "activeAssetCtx", self._context(self.info.by_coin[key]))
        elif kind == "candle":
            name, interval = key.split(":")
            candle = self.info.latest_candle(self.info.by_coin[name], interval)
            if candle is not None:
                self._send(connection, "candle", candle)
        elif kind == "clearinghouseState":
            self._state(connection, key)

    def _context(self, market) -> dict:
        return {"coin": coin(market), "ctx": self.info._asset_context(market)}

    def _state(self, connection: _Connection, user: str) -> None:
        connection.state_sent[user] = time.monotonic()
        due = connection.state_due.pop(user, None)
        if due is not None:
            due.cancel()
        self._send(connection, "clearinghouseState", {"dex": "", "user": user, "clearinghouseState":
                                                      self.info._clearinghouseState({"user": user})})

    def _to(self, kind: str, key: str):
        return [c for c in list(self.connections) if (kind, key) in c.subscriptions]

    # --------------------------------------------------------------------- taps

    def listening(self, account: str) -> bool:
        return any(key == account for c in self.connections for kind, key in c.subscriptions if kind in USER_CHANNELS)

    def market(self, message: object, before: BookLevels | None) -> None:
        market = self.host.markets.get(getattr(message, "market", ""))
        if market is None or not self.connections:
            return  # no WebSocket open: nothing to format
        name = coin(market)
        if isinstance(message, (BookDelta, BookSnapshot)):
            subscribers = self._to("l2Book", name)
            if subscribers:
                book = self.info._l2Book({"coin": name})
                for connection in subscribers:
                    self._send(connection, "l2Book", book)
        elif isinstance(message, BBO):
            levels = [{"px": self.info._price(market, p), "sz": self.info._size(market, s), "n": 1} if p else None
                      for p, s in ((message.bid_price, message.bid_size), (message.ask_price, message.ask_size))]
            for connection in self._to("bbo", name):
                self._send(connection, "bbo", {"coin": name, "time": message.ts // 1_000_000, "bbo": levels})
        elif isinstance(message, Trade):
            trade = {"coin": name, "side": "B" if message.taker_side is Side.BUY else "A",
                     "px": self.info._price(market, message.price), "sz": self.info._size(market, message.size),
                     "time": message.ts // 1_000_000, "hash": f"0x{message.trade_id:064x}", "tid": message.trade_id,
                     "users": ["0x" + "0" * 40, "0x" + "0" * 40]}
            for connection in self._to("trades", name):
                self._send(connection, "trades", [trade])
            self._candles(market, name)
        elif isinstance(message, MarkPrice):
            subscribers = self._to("allMids", "")
            if subscribers:
                mids = {"mids": self.info._allMids({})}
                for connection in subscribers:
                    self._send(connection, "allMids", mids)
            subscribers = self._to("activeAssetCtx", name)
            if subscribers:
                context = self._context(market)
                for connection in subscribers:
                    self._send(connection, "activeAssetCtx", context)
            self._states_moved(market.symbol)

    def _candles(self, market, name: str) -> None:
        """The current candle of every interval someone watches on this coin."""
        candles: dict[str, dict | None] = {}
        for connection in list(self.connections):
            for kind, key in list(connection.subscriptions):
                if kind == "candle" and key.startswith(name + ":"):
                    interval = key[len(name) + 1:]
                    if interval not in candles:
                        candles[interval] = self.info.latest_candle(market, interval)
                    if candles[interval] is not None:
                        self._send(connection, "candle", candles[interval])

    def _states_moved(self, symbol: str) -> None:
        """A new mark revalues the positions there: their holders' clearinghouseState, at
        most once every ``STATE_EVERY_S`` per connection, the last move never lost (one
        that comes sooner is sent when the interval ends)."""
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        for connection in list(self.connections):
            for kind, user in list(connection.subscriptions):
                if kind != "clearinghouseState" or user in connection.state_due:
                    continue
                state = self.host.ledger.accounts.get(user)
                snapshot = state.snapshot if state is not None else None
                if snapshot is None or not any(p.market == symbol for p in snapshot.positions):
                    continue
                wait = connection.state_sent.get(user, -STATE_EVERY_S) + STATE_EVERY_S - now
                if wait <= 0:
                    self._state(connection, user)
                else:
                    connection.state_due[user] = loop.call_later(wait, self._state_due, connection, user)

    def _state_due(self, connection: _Connection, user: str) -> None:
        connection.state_due.pop(user, None)
        if connection in self.connections and ("clearinghouseState", user) in connection.subscriptions:
            self._state(connection, user)

    def _fundings(self, account: str, event: AccountUpdate) -> None:
        """Funding payments of a margin snapshot: ``userFundings`` and ``userEvents``."""
        for item in event.snapshot.income:
            if item.kind is not IncomeKind.FUNDING_FEE:
                continue
            market = self.host.markets[item.market]
            position = next((p for p in event.snapshot.positions if p.market == item.market), None)
            funding = {"time": item.ts // 1_000_000, "coin": coin(market), "usdc": money(item.amount),
                       "szi": self.info._size(market, position.signed_size if position else 0), "fundingRate": "0.0"}
            for connection in self._to("userFundings", account):
                self._send(connection, "userFundings", {"user": account, "fundings": [funding]})
            for connection in self._to("userEvents", account):
                self._send(connection, "user", {"funding": funding})

    def user(self, account: str, event: UserEvent) -> None:
        if isinstance(event, AccountUpdate):
            for connection in self._to("clearinghouseState", account):
                self._state(connection, account)
            return self._fundings(account, event)
        if not isinstance(event, OrderUpdate):
            return None
        order = event.order
        update = [{"order": self.info._order(order), "status": self.info._status(order),
                   "statusTimestamp": event.when or int(time.time() * 1000)}]
        for connection in self._to("orderUpdates", account):
            self._send(connection, "orderUpdates", update)
        if event.trade is not None:
            fill = self.info.fill(event.trade)  # this trade alone, not the account's whole history
            for connection in self._to("userFills", account):
                self._send(connection, "userFills", {"user": account, "fills": [fill]})
            for connection in self._to("userEvents", account):
                self._send(connection, "user", {"fills": [fill]})
            if order.kind in FORCED:  # a forced close: Hyperliquid's liquidation event too
                market = order.market
                liquidation = {"lid": order.order_id, "liquidator": "0x" + "0" * 40, "liquidated_user": account,
                               "liquidated_ntl_pos": money(event.trade.price * event.trade.size
                                                           * market.value_per_tick_lot),
                               "liquidated_account_value": money(self.host.ledger.snapshot(account).balance)}
                for connection in self._to("userEvents", account):
                    self._send(connection, "user", {"liquidation": liquidation})
