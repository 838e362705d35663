"""The gateway's HTTP and WebSocket server (aiohttp): Binance USD-M futures paths,
parameters, fields and streams.

Public market data is served from a projection of ``market.data``, accounts from one of
``account.events`` (``Ledger``). Symbols are Binance's (``SOLUSDT`` for ``SOL-PERP``),
numbers decimal strings, errors Binance's ``{"code", "msg"}`` with its codes, never a
bare 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from urllib.parse import parse_qsl

from aiohttp import web

from exchange.markets import Market
from schemas import MARKET_DATA
from schemas.enums import (
    MarginMode,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from schemas.events import MAX_LEVERAGE, BookSnapshot, MarkPrice
from services.client import Client, Rejected
from services.gateway.binance.algo import CONDITIONAL_TYPES, AlgoOrders
from services.gateway.binance.limits import BINANCE, ORDERS, Limiter, RateLimits
from services.gateway.binance.params import (
    BATCH_LIMIT,
    RECV_WINDOW_MAX_MS,
    BinanceError,
    decimal,
    number,
)
from services.gateway.binance.streams import INTERVALS_MS, StreamHub
from services.gateway.binance.wire import (
    INCOME_NAMES,
    binance_symbol,
    order_json,
    trade_json,
    user_event,
)
from services.gateway.keys import KeyStore
from services.gateway.ledger import LIVE, Ledger, entry_price, money
from services.gateway.projection import MarketProjection, aggregate
from services.runtime.bus import Bus, TolerantReader

log = logging.getLogger(__name__)

FAR_FUTURE_MS = 4133404800000  # Binance's deliveryDate for perpetuals


RATE_HEADERS = web.RequestKey("rate_headers", dict)  # the rate limits' headers of a request's answer


class Gateway:
    def __init__(self, bus: Bus, markets: dict[str, Market], keys: KeyStore | None = None,
                 order_timeout_s: float = 10.0, limits: RateLimits | None = BINANCE):
        """``limits``: the request-weight and order-rate limits enforced (Binance's by
        default; None for none)."""
        self.bus = bus
        self.limiter = Limiter(limits) if limits is not None else None
        self.markets = markets
        self.by_symbol = {binance_symbol(m): m for m in markets.values()}
        self.projection = MarketProjection({symbol: m.value_per_tick_lot for symbol, m in markets.items()})
        self.keys = keys
        self.order_timeout_s = order_timeout_s
        self.client = Client(bus, markets, producer=f"gateway-{uuid.uuid4().hex[:8]}", keep=10_000)
        self.listen_keys: dict[str, str] = {}  # listen key -> account
        self.hub = StreamHub(markets, self.projection, self.listen_keys)
        # other dialects' streams (services/gateway/hyperliquid) tap the same feeds: each has
        # market(message), user(account, event) and listening(account)
        self.taps: list = []
        self.ledger = Ledger(markets, notify=self._notify,
                             listening=lambda account: self.hub.listening(account)
                             or any(tap.listening(account) for tap in self.taps),
                             marks=lambda: {symbol: state.mark for symbol, state in self.projection.markets.items()})
        self._reader: asyncio.Task | None = None
        self.market_data = TolerantReader(MARKET_DATA, "gateway")

    # ---------------------------------------------------------------- plumbing

    def _notify(self, account: str, event) -> None:
        if self.hub.listening(account):
            self.hub.user(account, user_event(event, self.markets))
        for tap in self.taps:
            if tap.listening(account):
                try:
                    tap.user(account, event)
                except Exception:  # noqa: BLE001 - a stream bug must not stop the ledger
                    log.exception("gateway could not stream a user event")

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_market_data())
        self.client.listen(self.ledger.apply)
        await self.client.start()

    async def stop(self) -> None:
        await self.hub.close()
        await self.client.stop()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass

    async def _read_market_data(self) -> None:
        consumer = self.bus.consumer(MARKET_DATA, f"perpsim-gateway-{id(self)}")
        try:
            while True:
                for record in await consumer.getmany(timeout_ms=50):
                    for message in self.market_data.messages(record):
                        before = None
                        if isinstance(message, BookSnapshot) and message.market in self.projection.markets:
                            state = self.projection.markets[message.market]
                            before = (state.bids, state.asks)
                        self.projection.apply(message)
                        try:
                            self.hub.market(message, before)
                            for tap in self.taps:
                                tap.market(message)
                            if isinstance(message, MarkPrice):
                                self.ledger.mark_moved(message.market, [a for a, c in self.hub.users.items() if c])
                        except Exception:  # noqa: BLE001 - a stream bug must not stop the projection
                            log.exception("gateway could not stream %s", type(message).__name__)
        finally:
            await consumer.stop()

    def application(self) -> web.Application:
        from services.gateway.metrics import VenueMetrics
        from services.gateway.web.app import WebView

        app = web.Application(middlewares=[self._errors, self._limits])
        view = WebView(self)  # the venue's web view, on this port's / (services/gateway/web)
        metrics = VenueMetrics(self)  # Prometheus, on this port's /metrics
        app.add_routes(view.routes() + metrics.routes())

        async def close_view(_app) -> None:
            await view.close()

        app.on_startup.append(metrics.start)
        app.on_cleanup.append(metrics.stop)
        app.on_cleanup.append(close_view)
        app.add_routes([
            web.get("/fapi/v1/ping", self.ping),
            web.get("/fapi/v1/time", self.server_time),
            web.get("/fapi/v1/exchangeInfo", self.exchange_info),
            web.get("/fapi/v1/depth", self.depth),
            web.get("/fapi/v1/ticker/bookTicker", self.book_ticker),
            web.get("/fapi/v1/ticker/24hr", self.ticker_24hr),
            web.get("/fapi/v1/ticker/price", self.ticker_price),
            web.get("/fapi/v1/premiumIndex", self.premium_index),
            web.get("/fapi/v1/fundingRate", self.funding_rate),
            web.get("/fapi/v1/fundingInfo", self.funding_info),
            web.get("/fapi/v1/trades", self.trades),
            web.get("/fapi/v1/aggTrades", self.agg_trades),
            web.get("/fapi/v1/klines", self.klines),
            web.get("/fapi/v1/markPriceKlines", self.mark_price_klines),
            web.get("/fapi/v3/account", self.account),
            web.get("/fapi/v2/account", self.account),
            web.get("/fapi/v3/balance", self.balance),
            web.get("/fapi/v2/balance", self.balance),
            web.get("/fapi/v2/positionRisk", self.position_risk),
            web.get("/fapi/v3/positionRisk", self.position_risk),
            web.post("/fapi/v1/marginType", self.margin_type),
            web.post("/fapi/v1/leverage", self.leverage),
            web.post("/fapi/v1/positionMargin", self.position_margin),
            web.get("/fapi/v1/leverageBracket", self.leverage_bracket),
            web.get("/fapi/v1/commissionRate", self.commission_rate),
            web.get("/fapi/v1/positionSide/dual", self.position_mode),
            web.post("/fapi/v1/positionSide/dual", self.set_position_mode),
            web.get("/fapi/v1/multiAssetsMargin", self.multi_assets),
            web.post("/fapi/v1/multiAssetsMargin", self.set_multi_assets),
            web.post("/fapi/v1/order", self.new_order),
            web.post("/fapi/v1/batchOrders", self.batch_orders),
            web.get("/fapi/v1/order", self.query_order),
            web.delete("/fapi/v1/order", self.cancel_order),
            web.put("/fapi/v1/order", self.modify_order),
            web.get("/fapi/v1/openOrders", self.open_orders),
            web.get("/fapi/v1/openOrder", self.query_open_order),
            web.delete("/fapi/v1/allOpenOrders", self.cancel_all),
            web.get("/fapi/v1/allOrders", self.all_orders),
            web.get("/fapi/v1/userTrades", self.user_trades),
            web.get("/fapi/v1/forceOrders", self.force_orders),
            web.get("/fapi/v1/income", self.income),
            web.post("/fapi/v1/listenKey", self.listen_key),
            web.put("/fapi/v1/listenKey", self.keep_listen_key),
            web.delete("/fapi/v1/listenKey", self.close_listen_key),
            *AlgoOrders(self).routes(),
            web.get("/ws", self.hub.handle),
            web.get("/ws/{tail:.*}", self.hub.handle),
            web.get("/stream", self.hub.handle),
            web.get("/{category:public|market|private}/ws", self.hub.handle),
            web.get("/{category:public|market|private}/ws/{tail:.*}", self.hub.handle),
            web.get("/{category:public|market|private}/stream", self.hub.handle),
        ])
        return app

    @web.middleware
    async def _limits(self, request: web.Request, handler):
        """Binance's rate limits (services/gateway/binance/limits.py): the request's weight,
        and a new order's count, before it is served; their headers on the answer."""
        if self.limiter is None or not request.path.startswith("/fapi/"):
            return await handler(request)
        request[RATE_HEADERS] = self.limiter.weigh(request)
        if (request.method, request.path) in ORDERS:
            found = self.keys.lookup(request.headers.get("X-MBX-APIKEY", "")) if self.keys is not None else None
            if found is not None:  # an unknown key is refused by the handler, uncounted
                count = 1
                if request.path.endswith("/batchOrders"):
                    payload = dict(parse_qsl(request.query_string + "&" + await request.text()))
                    try:
                        count = max(1, len(json.loads(payload.get("batchOrders", "[]"))))
                    except (ValueError, TypeError):
                        count = 1
                request[RATE_HEADERS].update(self.limiter.count_orders(found[1], count))
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        response = await self._answer(request, handler)
        response.headers.update(request.get(RATE_HEADERS, {}))
        return response

    async def _answer(self, request: web.Request, handler):
        try:
            return await handler(request)
        except BinanceError as exc:
            return web.json_response({"code": exc.code, "msg": exc.message}, status=exc.status)
        except web.HTTPException as exc:
            if exc.status == 404:
                return web.json_response({"code": -5000, "msg": f"Path {request.path}, Method {request.method} is "
                                                                "invalid"}, status=404)
            raise
        except Exception:  # noqa: BLE001 - a client never sees a bare 500
            log.exception("gateway error on %s", request.path)
            return web.json_response({"code": -1000, "msg": "An unknown error occured while processing the request."},
                                     status=500)

    def _market(self, request: web.Request, required: bool = True) -> Market | None:
        symbol = request.query.get("symbol")
        if symbol is None:
            if required:
                raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        market = self.by_symbol.get(symbol.upper())
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    # ---------------------------------------------------------------- public

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def server_time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for market in self.markets.values():
            price_places = max(0, -market.tick_size.normalize().as_tuple().exponent)
            size_places = max(0, -market.lot_size.normalize().as_tuple().exponent)
            mmr = market.mmr * 100
            symbols.append({
                "symbol": binance_symbol(market), "pair": binance_symbol(market), "contractType": "PERPETUAL",
                "deliveryDate": FAR_FUTURE_MS, "onboardDate": 1569398400000, "status": "TRADING",
                "maintMarginPercent": f"{float(mmr):.4f}", "requiredMarginPercent": f"{float(mmr * 2):.4f}",
                "baseAsset": market.base, "quoteAsset": "USDT", "marginAsset": "USDT",
                "pricePrecision": price_places, "quantityPrecision": size_places,
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
                "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.000000",
                "marketTakeBound": f"{market.price_band_ppm / 1_000_000:.2f}",
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": str(market.tick_size), "maxPrice": "10000000",
                     "tickSize": str(market.tick_size)},
                    {"filterType": "LOT_SIZE", "minQty": market.format_size(market.min_size), "maxQty": "10000000",
                     "stepSize": str(market.lot_size)},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": market.format_size(market.min_size),
                     "maxQty": "10000000", "stepSize": str(market.lot_size)},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MIN_NOTIONAL", "notional": "0"},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": f"{1 + market.price_band_ppm / 1e6:.4f}",
                     "multiplierDown": f"{1 - market.price_band_ppm / 1e6:.4f}", "multiplierDecimal": "4"},
                ],
                "orderTypes": ["LIMIT", "MARKET", *CONDITIONAL_TYPES], "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            })
        return web.json_response({
            "timezone": "UTC", "serverTime": int(time.time() * 1000), "futuresType": "U_MARGINED",
            "rateLimits": [], "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "0"}],
            "symbols": symbols,
        })

    async def depth(self, request: web.Request) -> web.Response:
        market = self._market(request)
        limit = number(request.query, "limit", 500, 1, 1000)
        bids, asks = self.projection.depth(market.symbol, limit)
        state = self.projection.markets[market.symbol]
        now = int(time.time() * 1000)
        return web.json_response({
            "lastUpdateId": state.update_id, "E": now, "T": now,
            "bids": [[market.format_price(p), market.format_size(s)] for p, s in bids],
            "asks": [[market.format_price(p), market.format_size(s)] for p, s in asks],
        })

    def _book_ticker(self, market: Market) -> dict:
        bid, ask = self.projection.best(market.symbol)
        return {"symbol": binance_symbol(market), "bidPrice": market.format_price(bid[0]),
                "bidQty": market.format_size(bid[1]), "askPrice": market.format_price(ask[0]),
                "askQty": market.format_size(ask[1]), "time": int(time.time() * 1000)}

    async def book_ticker(self, request: web.Request) -> web.Response:
        market = self._market(request, required=False)
        if market is not None:
            return web.json_response(self._book_ticker(market))
        return web.json_response([self._book_ticker(m) for m in self.markets.values()])

    def _ticker(self, market: Market) -> dict:
        """The last 24 hours, from the one-minute candles (and the last trade)."""
        state = self.projection.markets[market.symbol]
        now = int(time.time() * 1000)
        day = [c for c in state.candles if c[0] >= now - 86_400_000]
        last = state.trades[-1] if state.trades else None
        open_price = day[0][1] if day else 0
        last_price = last[1] if last else 0
        volume = sum(c[5] for c in day)
        quote = sum(c[6] for c in day)
        change = last_price - open_price if day else 0
        since_ns = (now - 86_400_000) * 1_000_000
        first_id = next((t[0] for t in state.trades if t[4] >= since_ns), last[0] if last else 0)
        return {
            "symbol": binance_symbol(market), "priceChange": market.format_price(change),
            "priceChangePercent": f"{(change / open_price * 100) if open_price else 0:.3f}",
            "weightedAvgPrice": f"{(quote / 1e6 / float(market.lot_size * volume)) if volume else 0:.8f}",
            "lastPrice": market.format_price(last_price), "lastQty": market.format_size(last[2] if last else 0),
            "openPrice": market.format_price(open_price),
            "highPrice": market.format_price(max((c[2] for c in day), default=0)),
            "lowPrice": market.format_price(min((c[3] for c in day), default=0)),
            "volume": market.format_size(volume), "quoteVolume": money(quote),
            "openTime": day[0][0] if day else 0, "closeTime": now,
            "firstId": first_id, "lastId": last[0] if last else 0, "count": sum(c[7] for c in day),
        }

    async def ticker_price(self, request: web.Request) -> web.Response:
        def price(market: Market) -> dict:
            trades = self.projection.markets[market.symbol].trades
            return {"symbol": binance_symbol(market), "price": market.format_price(trades[-1][1] if trades else 0),
                    "time": int(time.time() * 1000)}
        market = self._market(request, required=False)
        if market is not None:
            return web.json_response(price(market))
        return web.json_response([price(m) for m in self.markets.values()])

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        market = self._market(request, required=False)
        if market is not None:
            return web.json_response(self._ticker(market))
        return web.json_response([self._ticker(m) for m in self.markets.values()])

    def _premium(self, market: Market) -> dict:
        state = self.projection.markets[market.symbol]
        now = int(time.time() * 1000)
        return {"symbol": binance_symbol(market), "markPrice": market.format_price(state.mark),
                "indexPrice": market.format_price(state.index), "estimatedSettlePrice": market.format_price(state.index),
                "lastFundingRate": f"{state.funding_rate_ppb / 1e9:.8f}", "interestRate": "0.00010000",
                "nextFundingTime": (now // 3_600_000 + 1) * 3_600_000, "time": now}

    async def premium_index(self, request: web.Request) -> web.Response:
        market = self._market(request, required=False)
        if market is not None:
            return web.json_response(self._premium(market))
        return web.json_response([self._premium(m) for m in self.markets.values()])

    async def funding_rate(self, request: web.Request) -> web.Response:
        """Funding rate history: every funding payment the gateway has seen."""
        market = self._market(request, required=False)
        start, end = number(request.query, "startTime"), number(request.query, "endTime")
        limit = number(request.query, "limit", 100, 1, 1000)
        rows = []
        for chosen in [market] if market else self.markets.values():
            for ts, rate, mark in self.projection.markets[chosen.symbol].funding_history:
                when = ts // 1_000_000
                if (start is None or when >= start) and (end is None or when <= end):
                    rows.append({"symbol": binance_symbol(chosen), "fundingRate": f"{rate / 1e9:.8f}",
                                 "fundingTime": when, "markPrice": chosen.format_price(mark)})
        rows.sort(key=lambda row: row["fundingTime"])
        return web.json_response(rows[:limit] if start is not None else rows[-limit:])

    async def funding_info(self, request: web.Request) -> web.Response:
        return web.json_response([{"symbol": binance_symbol(m), "adjustedFundingRateCap": "0.03000000",
                                   "adjustedFundingRateFloor": "-0.03000000", "fundingIntervalHours": 1,
                                   "disclaimer": False} for m in self.markets.values()])

    def _klines(self, request: web.Request, mark: bool) -> list:
        market = self._market(request)
        interval = request.query.get("interval")
        if interval not in INTERVALS_MS:
            raise BinanceError(-1120, f"Invalid interval; one of {', '.join(INTERVALS_MS)}.")
        width = INTERVALS_MS[interval]
        start, end = number(request.query, "startTime"), number(request.query, "endTime")
        limit = number(request.query, "limit", 500, 1, 1500)
        state = self.projection.markets[market.symbol]
        price = market.format_price
        rows = []
        for candle in aggregate(state.mark_candles if mark else state.candles, width, start, end, limit):
            opened, o, h, low, c = candle[:5]
            if mark:
                rows.append([opened, price(o), price(h), price(low), price(c), "0", opened + width - 1, "0", 0, "0",
                             "0", "0"])
            else:
                volume, quote, count, buy, buy_quote = candle[5:]
                rows.append([opened, price(o), price(h), price(low), price(c), market.format_size(volume),
                             opened + width - 1, money(quote), count, market.format_size(buy), money(buy_quote), "0"])
        return rows

    async def klines(self, request: web.Request) -> web.Response:
        return web.json_response(self._klines(request, mark=False))

    async def mark_price_klines(self, request: web.Request) -> web.Response:
        return web.json_response(self._klines(request, mark=True))

    async def trades(self, request: web.Request) -> web.Response:
        market = self._market(request)
        limit = number(request.query, "limit", 500, 1, 1000)
        state = self.projection.markets[market.symbol]
        return web.json_response([
            {"id": trade_id, "price": market.format_price(price), "qty": market.format_size(size),
             "quoteQty": f"{price * size * market.value_per_tick_lot / 1e6:.6f}", "time": int(ts / 1e6),
             "isBuyerMaker": side < 0}
            for trade_id, price, size, side, ts in list(state.trades)[-limit:]])

    async def agg_trades(self, request: web.Request) -> web.Response:
        """Every trade is its own aggregate (perpsim trades are one fill each)."""
        market = self._market(request)
        limit = number(request.query, "limit", 500, 1, 1000)
        state = self.projection.markets[market.symbol]
        return web.json_response([
            {"a": trade_id, "p": market.format_price(price), "q": market.format_size(size), "f": trade_id,
             "l": trade_id, "T": int(ts / 1e6), "m": side < 0}
            for trade_id, price, size, side, ts in list(state.trades)[-limit:]])

    # ---------------------------------------------------------------- signed

    async def _signed(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """Verify Binance's HMAC-SHA256 signature and timestamp; (account, parameters)."""
        secret, account = self._api_key(request)
        payload = request.query_string if request.method in ("GET", "DELETE") else (await request.text())
        if request.method not in ("GET", "DELETE") and request.query_string:
            payload = request.query_string + ("&" + payload if payload else "")
        signed, marker, signature = payload.rpartition("&signature=")
        if not marker:
            raise BinanceError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        expected = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(signed, keep_blank_values=True))
        try:
            stamp = int(params["timestamp"])
        except (KeyError, ValueError):
            raise BinanceError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.") \
                from None
        window = number(params, "recvWindow", 5000)
        if not 0 < window <= RECV_WINDOW_MAX_MS:
            raise BinanceError(-1131, f"recvWindow must be less than {RECV_WINDOW_MAX_MS}.")
        now = int(time.time() * 1000)
        if not (now - window <= stamp <= now + 1000):
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        return account, params

    async def account(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        snapshot = self.ledger.valued(account)
        cross = next((b for b in snapshot.buckets if not b.market), None)
        unrealized = sum(p.unrealized_pnl for p in snapshot.positions)
        isolated = sum(p.isolated_margin for p in snapshot.positions)
        wallet = snapshot.balance + isolated
        margin_balance = wallet + unrealized
        initial = sum(p.initial_margin for p in snapshot.positions)
        maintenance = sum(p.maintenance_margin for p in snapshot.positions)
        usd = money
        asset = {"asset": "USDT", "walletBalance": usd(wallet), "unrealizedProfit": usd(unrealized),
                 "marginBalance": usd(margin_balance), "maintMargin": usd(maintenance),
                 "initialMargin": usd(initial), "positionInitialMargin": usd(initial),
                 "openOrderInitialMargin": "0.00000000", "crossWalletBalance": usd(snapshot.balance),
                 "crossUnPnl": usd(cross.equity - snapshot.balance if cross else 0),
                 "availableBalance": usd(snapshot.available_to_trade), "maxWithdrawAmount": usd(snapshot.withdrawable),
                 "updateTime": int(snapshot.ts / 1e6)}
        return web.json_response({
            "totalInitialMargin": usd(initial), "totalMaintMargin": usd(maintenance), "totalWalletBalance": usd(wallet),
            "totalUnrealizedProfit": usd(unrealized), "totalMarginBalance": usd(margin_balance),
            "totalPositionInitialMargin": usd(initial), "totalOpenOrderInitialMargin": "0.00000000",
            "totalCrossWalletBalance": usd(snapshot.balance), "totalCrossUnPnl": asset["crossUnPnl"],
            "availableBalance": asset["availableBalance"], "maxWithdrawAmount": asset["maxWithdrawAmount"],
            "assets": [asset],
            "positions": [{"symbol": binance_symbol(self.markets[p.market]), "positionSide": "BOTH",
                           "positionAmt": self.markets[p.market].format_size(p.signed_size),
                           "unrealizedProfit": usd(p.unrealized_pnl), "isolatedMargin": usd(p.isolated_margin),
                           "notional": usd(abs(p.signed_size) * p.mark_price * self.markets[p.market].value_per_tick_lot),
                           "isolatedWallet": usd(p.isolated_margin), "initialMargin": usd(p.initial_margin),
                           "maintMargin": usd(p.maintenance_margin), "updateTime": int(snapshot.ts / 1e6)}
                          for p in snapshot.positions],
        })

    REJECTS = {
        RejectReason.INSUFFICIENT_MARGIN: (-2019, "Account has insufficient balance for requested action."),
        RejectReason.WOULD_CROSS: (-5022, "Due to the order could not be executed as maker, the Post Only order "
                                          "will be rejected. The order will not be recorded in the order history"),
        RejectReason.REDUCE_ONLY_WOULD_INCREASE: (-2022, "ReduceOnly Order is rejected."),
        RejectReason.OFF_TICK_PRICE: (-1111, "Precision is over the maximum defined for this asset."),
        RejectReason.SIZE_NOT_LOT_MULTIPLE: (-1111, "Precision is over the maximum defined for this asset."),
        RejectReason.UNKNOWN_MARKET: (-1121, "Invalid symbol."),
        RejectReason.MARGIN_MODE_UNCHANGED: (-4046, "No need to change margin type."),
        RejectReason.MODE_CHANGE_WITH_OPEN_ORDERS: (-4047, "Margin type cannot be changed if there exists open orders."),
        RejectReason.MODE_CHANGE_WITH_POSITION: (-4048, "Margin type cannot be changed if there exists position."),
        RejectReason.LEVERAGE_OUT_OF_RANGE: (-4028, "Leverage is not valid."),
        RejectReason.LEVERAGE_BELOW_POSITION_MARGIN: (-4051, "Isolated balance insufficient."),
        RejectReason.NOT_ISOLATED: (-4052, "No need to modify position margin for cross positions."),
        RejectReason.NO_POSITION: (-4051, "Isolated balance insufficient."),
        RejectReason.REMOVE_MARGIN_ABOVE_ALLOWED: (-4051, "Isolated balance insufficient."),
        RejectReason.UNKNOWN_ORDER: (-2011, "Unknown order sent."),
        RejectReason.WOULD_TRIGGER_IMMEDIATELY: (-2021, "Order would immediately trigger."),
        RejectReason.ACCOUNT_IN_LIQUIDATION: (-2023, "User in liquidation mode now."),
    }

    async def _command(self, call):
        """``call``'s answer; a refusal as Binance's code (the ``Rejected`` is the cause),
        no answer in time as ``-1007``."""
        try:
            return await asyncio.wait_for(call, self.order_timeout_s)
        except Rejected as exc:
            code, message = self.REJECTS.get(exc.reason, (-1013, f"{exc.reason.name}: {exc.detail}"))
            raise BinanceError(code, message) from exc
        except TimeoutError:
            raise BinanceError(-1007, "Timeout waiting for response from backend server. Send status unknown; "
                                      "execution status unknown.", 408) from None

    def _signed_market(self, params: dict[str, str]) -> Market:
        market = self.by_symbol.get(params.get("symbol", "").upper())
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    async def margin_type(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params)
        mode = {"ISOLATED": MarginMode.ISOLATED, "CROSSED": MarginMode.CROSS}.get(params.get("marginType", "").upper())
        if mode is None:
            raise BinanceError(-1116, "Invalid marginType.")
        await self._command(self.client.set_margin_mode(account, market.symbol, mode))
        return web.json_response({"code": 200, "msg": "success"})

    async def leverage(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params)
        leverage = number(params, "leverage")
        if leverage is None:
            raise BinanceError(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.")
        if not 1 <= leverage <= MAX_LEVERAGE:
            raise BinanceError(-4028, "Leverage is not valid.")
        await self._command(self.client.set_leverage(account, market.symbol, leverage))
        ceiling = market.tiers[1].floor if len(market.tiers) > 1 else 10**13
        return web.json_response({"leverage": leverage, "maxNotionalValue": f"{ceiling / 1e6:.0f}",
                                  "symbol": binance_symbol(market)})

    async def position_margin(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params)
        kind = params.get("type")
        if kind not in ("1", "2") or "amount" not in params:
            raise BinanceError(-1102, "Mandatory parameters 'amount' and 'type' (1 add, 2 reduce) must be sent.")
        amount = decimal(params, "amount") if kind == "1" else f"-{decimal(params, 'amount')}"
        await self._command(self.client.adjust_margin(account, market.symbol, amount))
        return web.json_response({"amount": float(params["amount"]), "code": 200,
                                  "msg": "Successfully modify position margin.", "type": int(kind)})

    async def leverage_bracket(self, request: web.Request) -> web.Response:
        """The market's maintenance tiers, as Binance's notional brackets."""
        _, params = await self._signed(request)
        chosen = [self._signed_market(params)] if "symbol" in params else list(self.markets.values())
        result = []
        for market in chosen:
            tiers = market.tiers
            brackets = []
            for index, tier in enumerate(tiers):
                cap = tiers[index + 1].floor if index + 1 < len(tiers) else 10**16
                brackets.append({"bracket": index + 1, "initialLeverage": tier.max_leverage,
                                 "notionalCap": cap // 1_000_000, "notionalFloor": tier.floor // 1_000_000,
                                 "maintMarginRatio": float(tier.mmr), "cum": float(tier.deduction) / 1e6})
            result.append({"symbol": binance_symbol(market), "brackets": brackets})
        return web.json_response(result)

    async def position_risk(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        wanted = self._signed_market(params) if "symbol" in params else None
        snapshot = self.ledger.valued(account)
        usd = money
        rows = []
        for position in snapshot.positions:
            market = self.markets[position.market]
            if wanted is not None and market is not wanted:
                continue
            entry = entry_price(market, position)
            rows.append({
                "symbol": binance_symbol(market), "positionSide": "BOTH",
                "positionAmt": market.format_size(position.signed_size), "entryPrice": entry,
                "breakEvenPrice": entry, "markPrice": market.format_price(position.mark_price),
                "unRealizedProfit": usd(position.unrealized_pnl),
                "liquidationPrice": market.format_price(position.liquidation_price),
                "isolatedMargin": usd(position.isolated_margin), "isolatedWallet": usd(position.isolated_margin),
                "notional": usd(position.signed_size * position.mark_price * market.value_per_tick_lot),
                "marginAsset": "USDT", "leverage": str(position.leverage),
                "marginType": "isolated" if position.mode is MarginMode.ISOLATED else "cross",
                "initialMargin": usd(position.initial_margin), "maintMargin": usd(position.maintenance_margin),
                "positionInitialMargin": usd(position.initial_margin), "openOrderInitialMargin": "0",
                "adl": 0, "bidNotional": "0", "askNotional": "0", "isAutoAddMargin": "false",
                "maxNotionalValue": "10000000", "updateTime": snapshot.ts // 1_000_000})
        return web.json_response(rows)

    async def balance(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        snapshot = self.ledger.valued(account)
        cross = next((b for b in snapshot.buckets if not b.market), None)
        wallet = snapshot.balance + sum(p.isolated_margin for p in snapshot.positions)
        return web.json_response([{
            "accountAlias": account, "asset": "USDT", "balance": money(wallet),
            "crossWalletBalance": money(snapshot.balance),
            "crossUnPnl": money(cross.equity - snapshot.balance if cross else 0),
            "availableBalance": money(snapshot.available_to_trade), "maxWithdrawAmount": money(snapshot.withdrawable),
            "marginAvailable": True, "updateTime": snapshot.ts // 1_000_000}])

    async def commission_rate(self, request: web.Request) -> web.Response:
        _, params = await self._signed(request)
        market = self._signed_market(params)
        return web.json_response({"symbol": binance_symbol(market),
                                  "makerCommissionRate": f"{market.maker_fee_ppm / 1e6:.6f}",
                                  "takerCommissionRate": f"{market.taker_fee_ppm / 1e6:.6f}"})

    async def position_mode(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response({"dualSidePosition": False})

    async def set_position_mode(self, request: web.Request) -> web.Response:
        """One-way mode only: perpsim keeps one position per market and account."""
        _, params = await self._signed(request)
        if params.get("dualSidePosition", "").lower() == "true":
            raise BinanceError(-4059, "perpsim supports one-way position mode only (dualSidePosition=false).")
        raise BinanceError(-4059, "No need to change position side.")

    async def multi_assets(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response({"multiAssetsMargin": False})

    async def set_multi_assets(self, request: web.Request) -> web.Response:
        """Single-asset mode only: USDT is the one margin asset."""
        _, params = await self._signed(request)
        if params.get("multiAssetsMargin", "").lower() == "true":
            raise BinanceError(-4171, "perpsim supports single-asset margin mode only (multiAssetsMargin=false).")
        raise BinanceError(-4171, "Multi-Assets Mode is already set.")

    # ---------------------------------------------------------------- orders

    async def new_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return web.json_response(await self._place(account, params))

    async def batch_orders(self, request: web.Request) -> web.Response:
        """Up to five orders, placed concurrently; each answered by its order or its error."""
        account, params = await self._signed(request)
        try:
            orders = json.loads(params.get("batchOrders", ""))
            if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
                raise ValueError
        except ValueError:
            raise BinanceError(-1130, "Data sent for parameter 'batchOrders' is not valid.") from None
        if not orders or len(orders) > BATCH_LIMIT:
            raise BinanceError(-4082, f"Invalid number of batch place orders: {len(orders)} (1 to {BATCH_LIMIT}).")

        async def one(order: dict) -> dict:
            try:
                return await self._place(account, {k: str(v).lower() if isinstance(v, bool) else str(v)
                                                   for k, v in order.items()})
            except BinanceError as exc:
                return {"code": exc.code, "msg": exc.message}

        return web.json_response(list(await asyncio.gather(*(one(order) for order in orders))))

    async def _place(self, account: str, params: dict[str, str]) -> dict:
        market = self._signed_market(params)
        side = {"BUY": Side.BUY, "SELL": Side.SELL}.get(params.get("side", "").upper())
        if side is None:
            raise BinanceError(-1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        kind = params.get("type", "").upper()
        if kind in CONDITIONAL_TYPES:
            raise BinanceError(-4120, "Order type not supported for this endpoint. Please use the Algo Order API "
                                      "endpoints instead.")
        if kind not in ("LIMIT", "MARKET"):
            raise BinanceError(-1116, "Invalid orderType.")
        tif = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK, "GTX": TimeInForce.POST_ONLY
               }.get(params.get("timeInForce", "GTC").upper())
        if tif is None:
            raise BinanceError(-1115, "Invalid timeInForce.")
        if params.get("positionSide", "BOTH").upper() != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        if "quantity" not in params:
            raise BinanceError(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        decimal(params, "quantity")
        price = decimal(params, "price") if kind == "LIMIT" else None
        if kind == "LIMIT" and price is None:
            raise BinanceError(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        client_order_id = params.get("newClientOrderId") or uuid.uuid4().hex[:20]
        if any(o.client_order_id == client_order_id for o in self.ledger.open_orders(account)):
            raise BinanceError(-4015, "Client order id is not valid.")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        try:
            result = await self._command(self.client.place(
                account, market.symbol, side, params["quantity"], price, tif=tif, reduce_only=reduce_only,
                stp=SelfTradePrevention.CANCEL_TAKER, client_order_id=client_order_id))
        except BinanceError as error:
            refused = error.__cause__
            if isinstance(refused, Rejected) and refused.reason is RejectReason.FOK_NOT_FILLABLE and refused.order_id:
                # Binance accepts such an FOK order and expires it at once
                return order_json(self.ledger.expired(refused.order_id, account, market, client_order_id, side,
                                                      kind, tif, market.price_to_ticks(price) if price else 0,
                                                      market.size_to_lots(params["quantity"]), reduce_only))
            raise
        order = self.ledger.orders.get(result.order_id)
        if order is None:  # forgotten already: only in a flood of orders
            raise BinanceError(-1007, "Timeout waiting for response from backend server.", 408)
        return order_json(order)

    def _find_order(self, account: str, params: dict[str, str], code: int, message: str):
        market = self._signed_market(params)
        if "orderId" in params:
            order = self.ledger.orders.get(number(params, "orderId"))
        elif "origClientOrderId" in params:
            wanted = params["origClientOrderId"]
            order = next((o for o in reversed(self.ledger.by_account.get(account, {}).values())
                          if o.client_order_id == wanted), None)
        else:
            raise BinanceError(-1102, "Either orderId or origClientOrderId must be sent.")
        if order is None or order.account != account or order.market is not market:
            raise BinanceError(code, message)  # another account's order is no more visible than a missing one
        return order

    async def query_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return web.json_response(order_json(self._find_order(account, params, -2013, "Order does not exist.")))

    async def query_open_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        order = self._find_order(account, params, -2013, "Order does not exist.")
        if order.status not in LIVE:
            raise BinanceError(-2013, "Order does not exist.")
        return web.json_response(order_json(order))

    async def cancel_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        order = self._find_order(account, params, -2011, "Unknown order sent.")
        if order.status not in LIVE:
            raise BinanceError(-2011, "Unknown order sent.")
        await self._command(self.client.cancel(account, order.market.symbol, order.order_id))
        return web.json_response(order_json(order))

    async def modify_order(self, request: web.Request) -> web.Response:
        """Binance's modify: a resting LIMIT order's price and quantity (its side must match)."""
        account, params = await self._signed(request)
        order = self._find_order(account, params, -2013, "Order does not exist.")
        if order.status not in LIVE:
            raise BinanceError(-2013, "Order does not exist.")
        if order.kind != "LIMIT":
            raise BinanceError(-4000, "Only LIMIT orders can be modified.")
        if params.get("side", order.side.name).upper() != order.side.name:
            raise BinanceError(-4000, "The side of an order cannot be modified.")
        market = order.market
        price = decimal(params, "price") or market.format_price(order.price)
        quantity = decimal(params, "quantity") or market.format_size(order.size)
        # Binance: "a modified order is reordered in the match queue", whatever changed
        await self._command(self.client.amend(account, market.symbol, order.order_id, price, quantity, requeue=True))
        return web.json_response(order_json(order))

    async def cancel_all(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params)

        async def cancel(order) -> None:
            try:
                await asyncio.wait_for(self.client.cancel(account, market.symbol, order.order_id), self.order_timeout_s)
            except Rejected:
                pass  # it ended meanwhile: filled or expired
        await asyncio.gather(*(cancel(order) for order in self.ledger.open_orders(account, market)))
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order is done."})

    async def open_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params) if "symbol" in params else None
        return web.json_response([order_json(o) for o in self.ledger.open_orders(account, market)])

    async def all_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params)
        from_id = number(params, "orderId")
        start, end = number(params, "startTime"), number(params, "endTime")
        limit = number(params, "limit", 500, 1, 1000)
        chosen = [o for o in self.ledger.by_account.get(account, {}).values() if o.market is market
                  and (from_id is None or o.order_id >= from_id) and (start is None or o.time_ms >= start)
                  and (end is None or o.time_ms <= end)]
        chosen.sort(key=lambda o: o.order_id)
        chosen = chosen[:limit] if (from_id is not None or start is not None) else chosen[-limit:]
        return web.json_response([order_json(o) for o in chosen])

    async def force_orders(self, request: web.Request) -> web.Response:
        """The account's forced closes: liquidation orders (``autoclose-...``) and ADL
        (``adl_autoclose``), newest last; ``autoCloseType`` LIQUIDATION or ADL."""
        account, params = await self._signed(request)
        market = self._signed_market(params) if "symbol" in params else None
        kind = params.get("autoCloseType", "").upper()
        if kind not in ("", "LIQUIDATION", "ADL"):
            raise BinanceError(-1116, "Invalid autoCloseType.")
        start, end = number(params, "startTime"), number(params, "endTime")
        limit = number(params, "limit", 50, 1, 100)
        chosen = [o for o in self.ledger.forced_orders(account, market) if (not kind or o.kind == kind)
                  and (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)]
        return web.json_response([order_json(o) for o in chosen[-limit:]])

    async def user_trades(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params)
        from_id, order_id = number(params, "fromId"), number(params, "orderId")
        start, end = number(params, "startTime"), number(params, "endTime")
        limit = number(params, "limit", 500, 1, 1000)
        trades = [t for t in self.ledger.account(account).trades if t.market is market
                  and (from_id is None or t.trade_id >= from_id) and (order_id is None or t.order_id == order_id)
                  and (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)]
        trades = trades[:limit] if (from_id is not None or start is not None) else trades[-limit:]
        return web.json_response([trade_json(t) for t in trades])

    async def income(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params) if "symbol" in params else None
        wanted = params.get("incomeType")
        names = {name: kind for kind, name in INCOME_NAMES.items()}
        if wanted is not None and wanted not in names:
            raise BinanceError(-1116, f"Invalid incomeType; one of {', '.join(names)}.")
        start, end = number(params, "startTime"), number(params, "endTime")
        limit = number(params, "limit", 100, 1, 1000)
        rows = []
        for tran_id, item in self.ledger.account(account).income:
            when = item.ts // 1_000_000
            if (market is not None and item.market != market.symbol) or (wanted and names[wanted] is not item.kind) \
                    or (start is not None and when < start) or (end is not None and when > end):
                continue
            rows.append({"symbol": binance_symbol(self.markets[item.market]) if item.market else "",
                         "incomeType": INCOME_NAMES[item.kind], "income": money(item.amount), "asset": "USDT",
                         "info": INCOME_NAMES[item.kind], "time": when, "tranId": tran_id,
                         "tradeId": str(item.trade_id) if item.trade_id else ""})
        rows = rows[:limit] if start is not None else rows[-limit:]
        return web.json_response(rows)

    # ---------------------------------------------------------------- user data stream

    async def listen_key(self, request: web.Request) -> web.Response:
        """A user data stream key (only the API key is needed, as on Binance); the same key
        while it is in use."""
        account = self._api_key_account(request)
        key = next((k for k, a in self.listen_keys.items() if a == account), None)
        if key is None:
            key = secrets.token_urlsafe(48)
            self.listen_keys[key] = account
        return web.json_response({"listenKey": key})

    async def keep_listen_key(self, request: web.Request) -> web.Response:
        account = self._api_key_account(request)
        key = next((k for k, a in self.listen_keys.items() if a == account), None)
        if key is None:
            raise BinanceError(-1125, "This listenKey does not exist.")
        return web.json_response({"listenKey": key})

    async def close_listen_key(self, request: web.Request) -> web.Response:
        account = self._api_key_account(request)
        for key in [k for k, a in self.listen_keys.items() if a == account]:
            self.hub.close_user(key)
            del self.listen_keys[key]
        return web.json_response({})

    def _api_key(self, request: web.Request) -> tuple[str, str]:
        """(secret, account) of the request's API key, or Binance's -2015."""
        key = request.headers.get("X-MBX-APIKEY")
        found = self.keys.lookup(key) if (key and self.keys is not None) else None
        if found is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return found

    def _api_key_account(self, request: web.Request) -> str:
        return self._api_key(request)[1]
