"""Binance USD-M WebSocket streams over aiohttp: market streams (``<symbol>@depth``,
``@depth5|10|20``, ``@aggTrade``, ``@trade``, ``@markPrice``, ``@bookTicker``,
``@kline_<interval>``) and the
user data stream (``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``, ``MARGIN_CALL``).

Connections are accepted where Binance and ccxt put them: ``/ws``, ``/ws/<streams>``,
``/stream?streams=a/b`` (payloads wrapped as ``{"stream", "data"}``), the same under
``/public``, ``/market`` and ``/private``, and a user data stream at
``/ws/<listenKey>``, ``...?listenKey=<key>``, or as a stream of a combined connection
(``/stream?streams=<listenKey>``, or ``SUBSCRIBE``d; its payloads wrapped under the key). ``SUBSCRIBE``, ``UNSUBSCRIBE`` and
``LIST_SUBSCRIPTIONS`` requests are answered as Binance answers them.

Every connection has a bounded queue; a client that falls ``QUEUE_LIMIT`` messages behind
is disconnected (code 1008), as Binance drops slow consumers, rather than growing the
gateway's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

from aiohttp import WSMsgType, web

from exchange.markets import Market
from schemas.events import BookDelta, BookSnapshot, MarkPrice, Trade
from services.gateway.binance.wire import binance_symbol
from services.gateway.ledger import money
from services.gateway.projection import MarketProjection, aggregate

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
STREAM = re.compile(r"^([a-z0-9]+)@(depth(?:5|10|20)?|aggTrade|trade|markPrice|bookTicker|"
                    r"kline_(?:1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w))(?:@(\d+m?s))?$")
INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
                "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000,
                "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000}


class Connection:
    def __init__(self, ws: web.WebSocketResponse, combined: bool, account: str | None, listen_key: str | None = None):
        self.ws = ws
        self.combined = combined
        self.account = account
        self.listen_key = listen_key  # a combined stream names the user data by it, as Binance does
        self.streams: dict[tuple[str, str], set[str]] = {}  # (market, kind) -> names as subscribed
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)

    def put(self, name: str, payload: dict) -> bool:
        try:
            self.queue.put_nowait({"stream": name, "data": payload} if self.combined else payload)
            return True
        except asyncio.QueueFull:
            return False


class StreamHub:
    def __init__(self, markets: dict[str, Market], projection: MarketProjection, listen_keys: dict[str, str]):
        self.markets = markets
        self.by_lower = {binance_symbol(m).lower(): m for m in markets.values()}
        self.projection = projection
        self.listen_keys = listen_keys  # listen key -> account
        self.subscribers: dict[tuple[str, str], set[Connection]] = {}
        self.users: dict[str, set[Connection]] = {}
        self.connections: set[Connection] = set()

    # ------------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        tail = request.match_info.get("tail", "").strip("/")
        key = request.query.get("listenKey") or (tail if tail in self.listen_keys else None)
        account = self.listen_keys.get(key) if key else None
        if key and account is None:
            await ws.send_json({"error": {"code": -1125, "msg": "This listenKey does not exist."}})
            await ws.close(code=1008, message=b"unknown listenKey")
            return ws
        combined = request.path.rstrip("/").endswith("/stream") or "/stream/" in request.path
        connection = Connection(ws, combined, account, key)
        names = [n for n in request.query.get("streams", "").split("/") if n]
        if not account and tail:  # other path segments (ccxt appends a connection number) are not streams
            names += [n for n in tail.split("/") if "@" in n]
        self.connections.add(connection)
        if account:
            self.users.setdefault(account, set()).add(connection)
        # a listen key among the streams (``/stream?streams=<listenKey>/<symbol>@...``, as
        # nautilus_trader connects) is the user data stream
        unknown = [n for n in names if not self._subscribe(connection, n) and not self._attach_user(connection, n)]
        writer = asyncio.create_task(self._write(connection))
        try:
            if unknown:
                await ws.send_json({"error": {"code": 2, "msg": f"Invalid request: unknown stream(s) {unknown}"}})
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._request(connection, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            writer.cancel()
            self._drop(connection)
        return ws

    async def _write(self, connection: Connection) -> None:
        try:
            while True:
                payload = await connection.queue.get()
                await connection.ws.send_str(json.dumps(payload, separators=(",", ":")))
        except (ConnectionResetError, RuntimeError):
            pass  # the peer went away; the reader loop ends the connection

    def _drop(self, connection: Connection) -> None:
        self.connections.discard(connection)
        for key in connection.streams:
            self.subscribers.get(key, set()).discard(connection)
        if connection.account:
            self.users.get(connection.account, set()).discard(connection)

    async def _request(self, connection: Connection, text: str) -> None:
        """Binance's stream requests: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS."""
        try:
            request = json.loads(text)
            method, params, request_id = request.get("method"), request.get("params", []), request.get("id")
        except (ValueError, AttributeError):
            await connection.ws.send_json({"error": {"code": 3, "msg": "Invalid JSON: expected an object"}})
            return
        if method == "SUBSCRIBE" and isinstance(params, list):
            unknown = [name for name in params
                       if not self._subscribe(connection, str(name)) and not self._attach_user(connection, str(name))]
            if unknown:
                await connection.ws.send_json({"error": {"code": 2, "msg": f"Invalid request: unknown stream(s) "
                                                                            f"{unknown}"}, "id": request_id})
                return
            await connection.ws.send_json({"result": None, "id": request_id})
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            for name in params:
                self._unsubscribe(connection, str(name))
            await connection.ws.send_json({"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            names = sorted(n for names in connection.streams.values() for n in names)
            await connection.ws.send_json({"result": names, "id": request_id})
        else:
            await connection.ws.send_json({"error": {"code": 2, "msg": f"Invalid request: method {method!r} with "
                                                                        f"params {params!r}"}, "id": request_id})

    def _parse(self, name: str) -> tuple[str, str] | None:
        found = STREAM.match(name)
        if found is None:
            return None
        market = self.by_lower.get(found.group(1))
        return (market.symbol, found.group(2)) if market else None

    def _subscribe(self, connection: Connection, name: str) -> bool:
        key = self._parse(name)
        if key is None:
            return False
        connection.streams.setdefault(key, set()).add(name)
        self.subscribers.setdefault(key, set()).add(connection)
        return True

    def _attach_user(self, connection: Connection, name: str) -> bool:
        """``name`` is a listen key: the connection carries its account's user data."""
        account = self.listen_keys.get(name)
        if account is None:
            return False
        if connection.account is not None and connection.account != account:
            return False  # one account's user data per connection
        connection.account, connection.listen_key = account, name
        self.users.setdefault(account, set()).add(connection)
        return True

    def _unsubscribe(self, connection: Connection, name: str) -> None:
        key = self._parse(name)
        if key is None or key not in connection.streams:
            return
        connection.streams[key].discard(name)
        if not connection.streams[key]:
            del connection.streams[key]
            self.subscribers.get(key, set()).discard(connection)

    async def close(self) -> None:
        for connection in list(self.connections):
            await connection.ws.close(code=1001, message=b"gateway stopping")

    def close_user(self, key: str) -> None:
        """The listen key was deleted: its connections end."""
        account = self.listen_keys.get(key)
        for connection in list(self.users.get(account, ())):
            asyncio.ensure_future(connection.ws.close(code=1000, message=b"listenKey deleted"))

    # ------------------------------------------------------------------ publishing

    def _send(self, connections: set[Connection], name_of, payload: dict) -> None:
        for connection in list(connections):
            for name in name_of(connection):
                if not connection.put(name, payload):
                    log.warning("closing a stream connection that fell %d messages behind", QUEUE_LIMIT)
                    self._drop(connection)
                    asyncio.ensure_future(connection.ws.close(code=1008, message=b"slow consumer"))
                    break

    def _publish(self, symbol: str, kind: str, payload: dict) -> None:
        connections = self.subscribers.get((symbol, kind))
        if connections:
            self._send(connections, lambda c: c.streams.get((symbol, kind), ()), payload)

    def listening(self, account: str) -> bool:
        return bool(self.users.get(account))

    def user(self, account: str, payload: dict) -> None:
        connections = self.users.get(account)
        if connections:
            self._send(connections, lambda c: (c.listen_key or "user",), payload)

    def market(self, message, before: tuple[dict, dict] | None = None) -> None:
        """Stream payloads for one ``market.data`` message (already folded into the
        projection); ``before``: for a ``BookSnapshot``, the book's levels before it."""
        symbol = getattr(message, "market", "")
        market = self.markets.get(symbol)
        if market is None or not any(connections and watched == symbol
                                     for (watched, _), connections in self.subscribers.items()):
            return  # nobody streams this market: nothing to format
        now = int(time.time() * 1000)
        name = binance_symbol(market)
        state = self.projection.markets[symbol]
        if isinstance(message, (BookDelta, BookSnapshot)):
            if self.subscribers.get((symbol, "depth")):
                if isinstance(message, BookSnapshot):  # a full book: levels no longer present go to 0
                    old_bids, old_asks = before or ({}, {})
                    bids = list(message.bids) + [(p, 0) for p in self._gone(old_bids, message.bids)]
                    asks = list(message.asks) + [(p, 0) for p in self._gone(old_asks, message.asks)]
                else:
                    bids, asks = message.bids, message.asks
                self._publish(symbol, "depth", self._depth_update(market, state.update_id, now, bids, asks))
            for levels in (5, 10, 20):
                if self.subscribers.get((symbol, f"depth{levels}")):
                    bids, asks = self.projection.depth(symbol, levels)
                    self._publish(symbol, f"depth{levels}", self._depth_update(market, state.update_id, now, bids,
                                                                               asks))
            if self.subscribers.get((symbol, "bookTicker")):
                bid, ask = self.projection.best(symbol)
                self._publish(symbol, "bookTicker", {
                    "e": "bookTicker", "u": state.update_id, "E": now, "T": now, "s": name,
                    "b": market.format_price(bid[0]), "B": market.format_size(bid[1]),
                    "a": market.format_price(ask[0]), "A": market.format_size(ask[1])})
        elif isinstance(message, Trade):
            when = message.ts // 1_000_000 or now
            price, size = market.format_price(message.price), market.format_size(message.size)
            buyer_maker = message.taker_side < 0
            self._publish(symbol, "aggTrade", {"e": "aggTrade", "E": now, "s": name, "a": message.trade_id, "p": price,
                                               "q": size, "f": message.trade_id, "l": message.trade_id, "T": when,
                                               "m": buyer_maker})
            self._publish(symbol, "trade", {"e": "trade", "E": now, "T": when, "s": name, "t": message.trade_id,
                                            "p": price, "q": size, "X": "MARKET", "m": buyer_maker})
            for interval, width in INTERVALS_MS.items():
                if self.subscribers.get((symbol, f"kline_{interval}")) and state.candles:
                    opened = state.candles[-1][0] // width * width
                    [candle] = aggregate(state.candles, width, opened, None, 1)
                    _, o, h, low, c, volume, quote, count, buy, buy_quote = candle
                    self._publish(symbol, f"kline_{interval}", {"e": "kline", "E": now, "s": name, "k": {
                        "t": opened, "T": opened + width - 1, "s": name, "i": interval, "f": message.trade_id,
                        "L": message.trade_id, "o": market.format_price(o), "c": market.format_price(c),
                        "h": market.format_price(h), "l": market.format_price(low),
                        "v": market.format_size(volume), "n": count, "x": False, "q": money(quote),
                        "V": market.format_size(buy), "Q": money(buy_quote), "B": "0"}})
        elif isinstance(message, MarkPrice):
            self._publish(symbol, "markPrice", {
                "e": "markPriceUpdate", "E": now, "s": name, "p": market.format_price(message.mark_price),
                "i": market.format_price(message.index_price), "P": market.format_price(message.index_price),
                "r": f"{state.funding_rate_ppb / 1e9:.8f}", "T": (now // 3_600_000 + 1) * 3_600_000})

    @staticmethod
    def _depth_update(market: Market, update_id: int, now: int, bids, asks) -> dict:
        """Binance's ``depthUpdate``: one update id per book change, ``pu`` the previous."""
        return {"e": "depthUpdate", "E": now, "T": now, "s": binance_symbol(market), "U": update_id, "u": update_id,
                "pu": update_id - 1, "b": [[market.format_price(p), market.format_size(s)] for p, s in bids],
                "a": [[market.format_price(p), market.format_size(s)] for p, s in asks]}

    @staticmethod
    def _gone(before: dict[int, int], levels: list[tuple[int, int]]) -> list[int]:
        now = {p for p, _ in levels}
        return [p for p in before if p not in now]
