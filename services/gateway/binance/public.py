"""Binance's public market data (``/fapi/v1/ping`` ... ``/fapi/v1/markPriceKlines``), from
the host's projection of ``market.data``."""

from __future__ import annotations

import time

from aiohttp import web

from exchange.markets import Market
from services.gateway.binance.algo import CONDITIONAL_TYPES
from services.gateway.binance.context import BinanceContext
from services.gateway.binance.params import BinanceError, number
from services.gateway.binance.streams import INTERVALS_MS
from services.gateway.binance.wire import binance_symbol
from services.gateway.ledger import money
from services.gateway.projection import aggregate

FAR_FUTURE_MS = 4133404800000  # Binance's deliveryDate for perpetuals


class PublicApi:
    def __init__(self, context: BinanceContext):
        self.context = context
        self.markets = context.markets
        self.projection = context.projection
        self._market = context.market

    def routes(self) -> list:
        return [
            web.get("/fapi/v1/ping", self.ping),
            web.get("/fapi/v1/time", self.server_time),
            web.get("/fapi/v1/exchangeInfo", self.exchange_info),
            web.get("/fapi/v1/depth", self.depth),
            web.get("/fapi/v1/ticker/bookTicker", self.book_ticker),
            web.get("/fapi/v1/ticker/24hr", self.ticker_24hr),
            web.get("/fapi/v1/ticker/price", self.ticker_price),
            web.get("/fapi/v2/ticker/price", self.ticker_price),
            web.get("/fapi/v1/premiumIndex", self.premium_index),
            web.get("/fapi/v1/fundingRate", self.funding_rate),
            web.get("/fapi/v1/fundingInfo", self.funding_info),
            web.get("/fapi/v1/trades", self.trades),
            web.get("/fapi/v1/aggTrades", self.agg_trades),
            web.get("/fapi/v1/klines", self.klines),
            web.get("/fapi/v1/markPriceKlines", self.mark_price_klines),
            web.get("/fapi/v1/indexPriceKlines", self.index_price_klines),
            web.get("/fapi/v1/premiumIndexKlines", self.premium_index_klines),
        ]

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
                    {"filterType": "PERCENT_PRICE", "multiplierUp": f"{1 + market.limit_band_ppm / 1e6:.4f}",
                     "multiplierDown": f"{1 - market.limit_band_ppm / 1e6:.4f}", "multiplierDecimal": "4"},
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

    def _klines(self, request: web.Request, kind: str = "trades") -> list:
        """Candles of trades, or of a price (``mark``, ``index``, ``premium``: Binance's
        twelve fields with the volumes "0")."""
        if kind == "index":  # Binance names the index's market by its pair, not its symbol
            pair = request.query.get("pair")
            if pair is None:
                raise BinanceError(-1102, "Mandatory parameter 'pair' was not sent, was empty/null, or malformed.")
            market = self.context.by_symbol.get(pair.upper())
            if market is None:
                raise BinanceError(-1121, "Invalid symbol.")
        else:
            market = self._market(request)
        interval = request.query.get("interval")
        if interval not in INTERVALS_MS:
            raise BinanceError(-1120, f"Invalid interval; one of {', '.join(INTERVALS_MS)}.")
        width = INTERVALS_MS[interval]
        start, end = number(request.query, "startTime"), number(request.query, "endTime")
        limit = number(request.query, "limit", 500, 1, 1500)
        state = self.projection.markets[market.symbol]
        price = (lambda ppb: f"{ppb / 1e9:.8f}") if kind == "premium" else market.format_price
        candles = {"trades": state.candles, "mark": state.mark_candles, "index": state.index_candles,
                   "premium": state.premium_candles}[kind]
        rows = []
        for candle in aggregate(candles, width, start, end, limit):
            opened, o, h, low, c = candle[:5]
            if kind != "trades":
                rows.append([opened, price(o), price(h), price(low), price(c), "0", opened + width - 1, "0", 0, "0",
                             "0", "0"])
            else:
                volume, quote, count, buy, buy_quote = candle[5:]
                rows.append([opened, price(o), price(h), price(low), price(c), market.format_size(volume),
                             opened + width - 1, money(quote), count, market.format_size(buy), money(buy_quote), "0"])
        return rows

    async def klines(self, request: web.Request) -> web.Response:
        return web.json_response(self._klines(request))

    async def mark_price_klines(self, request: web.Request) -> web.Response:
        return web.json_response(self._klines(request, "mark"))

    async def index_price_klines(self, request: web.Request) -> web.Response:
        return web.json_response(self._klines(request, "index"))

    async def premium_index_klines(self, request: web.Request) -> web.Response:
        """The mark's premium over the index, (mark − index) / index: Binance's premium
        index is the impact prices' (docs/gateway.md)."""
        return web.json_response(self._klines(request, "premium"))

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
