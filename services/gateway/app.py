"""The gateway's HTTP server (aiohttp): Binance USD-M futures paths, parameters and fields.

Public market data is served from a projection of ``market.data``. Symbols are Binance's
(``SOLUSDT`` for ``SOL-PERP``), numbers decimal strings, errors Binance's ``{"code",
"msg"}`` with its codes, never a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from exchange.markets import Market
from schemas import MARKET_DATA, SchemaError, codec
from services.bus.base import Bus
from services.gateway.projection import MarketProjection

log = logging.getLogger(__name__)

FAR_FUTURE_MS = 4133404800000  # Binance's deliveryDate for perpetuals


class BinanceError(Exception):
    """An error a Binance client understands: HTTP status, code and message."""

    def __init__(self, code: int, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def binance_symbol(market: Market) -> str:
    return f"{market.base}USDT"


class Gateway:
    def __init__(self, bus: Bus, markets: dict[str, Market]):
        self.bus = bus
        self.markets = markets
        self.by_symbol = {binance_symbol(m): m for m in markets.values()}
        self.projection = MarketProjection(list(markets))
        self._reader: asyncio.Task | None = None

    # ---------------------------------------------------------------- plumbing

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_market_data())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass

    async def _read_market_data(self) -> None:
        consumer = self.bus.consumer(MARKET_DATA, f"perpsim-gateway-{id(self)}")
        market_codec = codec(MARKET_DATA)
        try:
            while True:
                for record in await consumer.getmany(timeout_ms=50):
                    try:
                        for message in market_codec.decode(record.value):
                            self.projection.apply(message)
                    except SchemaError as exc:
                        log.warning("gateway skipped undecodable market data: %s", exc)
        finally:
            await consumer.stop()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.add_routes([
            web.get("/fapi/v1/ping", self.ping),
            web.get("/fapi/v1/time", self.server_time),
            web.get("/fapi/v1/exchangeInfo", self.exchange_info),
            web.get("/fapi/v1/depth", self.depth),
            web.get("/fapi/v1/ticker/bookTicker", self.book_ticker),
            web.get("/fapi/v1/ticker/24hr", self.ticker_24hr),
            web.get("/fapi/v1/premiumIndex", self.premium_index),
            web.get("/fapi/v1/trades", self.trades),
            web.get("/fapi/v1/aggTrades", self.agg_trades),
        ])
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler):
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
                "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            })
        return web.json_response({
            "timezone": "UTC", "serverTime": int(time.time() * 1000), "futuresType": "U_MARGINED",
            "rateLimits": [], "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "0"}],
            "symbols": symbols,
        })

    async def depth(self, request: web.Request) -> web.Response:
        market = self._market(request)
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'limit'.") from None
        bids, asks = self.projection.depth(market.symbol, max(1, min(limit, 1000)))
        state = self.projection.markets[market.symbol]
        now = int(time.time() * 1000)
        return web.json_response({
            "lastUpdateId": state.update_id, "E": now, "T": now,
            "bids": [[market.format_price(p), market.format_size(s)] for p, s in bids],
            "asks": [[market.format_price(p), market.format_size(s)] for p, s in asks],
        })

    def _book_ticker(self, market: Market) -> dict:
        bids, asks = self.projection.depth(market.symbol, 1)
        bid = bids[0] if bids else (0, 0)
        ask = asks[0] if asks else (0, 0)
        return {"symbol": binance_symbol(market), "bidPrice": market.format_price(bid[0]),
                "bidQty": market.format_size(bid[1]), "askPrice": market.format_price(ask[0]),
                "askQty": market.format_size(ask[1]), "time": int(time.time() * 1000)}

    async def book_ticker(self, request: web.Request) -> web.Response:
        market = self._market(request, required=False)
        if market is not None:
            return web.json_response(self._book_ticker(market))
        return web.json_response([self._book_ticker(m) for m in self.markets.values()])

    def _ticker(self, market: Market) -> dict:
        state = self.projection.markets[market.symbol]
        now_ns = time.time_ns()
        day = [t for t in state.trades if t[4] >= now_ns - 86_400 * 10**9]
        last = state.trades[-1] if state.trades else None
        open_price = day[0][1] if day else 0
        last_price = last[1] if last else 0
        volume = sum(t[2] for t in day)
        quote_volume = sum(t[1] * t[2] * market.value_per_tick_lot for t in day) / 1e6
        change = last_price - open_price
        return {
            "symbol": binance_symbol(market), "priceChange": market.format_price(change),
            "priceChangePercent": f"{(change / open_price * 100) if open_price else 0:.3f}",
            "weightedAvgPrice": f"{(quote_volume / float(market.lot_size * volume)) if volume else 0:.8f}",
            "lastPrice": market.format_price(last_price), "lastQty": market.format_size(last[2] if last else 0),
            "openPrice": market.format_price(open_price),
            "highPrice": market.format_price(max((t[1] for t in day), default=0)),
            "lowPrice": market.format_price(min((t[1] for t in day), default=0)),
            "volume": market.format_size(volume), "quoteVolume": f"{quote_volume:.2f}",
            "openTime": int(day[0][4] / 1e6) if day else 0, "closeTime": int(now_ns / 1e6),
            "firstId": day[0][0] if day else 0, "lastId": last[0] if last else 0, "count": len(day),
        }

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

    async def trades(self, request: web.Request) -> web.Response:
        market = self._market(request)
        limit = max(1, min(int(request.query.get("limit", "500")), 1000))
        state = self.projection.markets[market.symbol]
        return web.json_response([
            {"id": trade_id, "price": market.format_price(price), "qty": market.format_size(size),
             "quoteQty": f"{price * size * market.value_per_tick_lot / 1e6:.6f}", "time": int(ts / 1e6),
             "isBuyerMaker": side < 0}
            for trade_id, price, size, side, ts in list(state.trades)[-limit:]])

    async def agg_trades(self, request: web.Request) -> web.Response:
        """Every trade is its own aggregate (perpsim trades are one fill each)."""
        market = self._market(request)
        limit = max(1, min(int(request.query.get("limit", "500")), 1000))
        state = self.projection.markets[market.symbol]
        return web.json_response([
            {"a": trade_id, "p": market.format_price(price), "q": market.format_size(size), "f": trade_id,
             "l": trade_id, "T": int(ts / 1e6), "m": side < 0}
            for trade_id, price, size, side, ts in list(state.trades)[-limit:]])
