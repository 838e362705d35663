"""The gateway's HTTP server (aiohttp): Binance USD-M futures paths, parameters and fields.

Public market data is served from a projection of ``market.data``. Symbols are Binance's
(``SOLUSDT`` for ``SOL-PERP``), numbers decimal strings, errors Binance's ``{"code",
"msg"}`` with its codes, never a bare 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from urllib.parse import parse_qsl

from aiohttp import web

from exchange.markets import Market
from schemas import MARKET_DATA, SchemaError, codec
from schemas.enums import CloseReason, MarginMode, RejectReason, SelfTradePrevention, Side, TimeInForce
from schemas.events import Fill, MarginSnapshot, OrderAccepted, OrderClosed
from services.bus.base import Bus
from services.client import Client, OrderResult, Rejected
from services.gateway.keys import KeyStore
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
    def __init__(self, bus: Bus, markets: dict[str, Market], keys: KeyStore | None = None,
                 order_timeout_s: float = 10.0):
        self.bus = bus
        self.markets = markets
        self.by_symbol = {binance_symbol(m): m for m in markets.values()}
        self.projection = MarketProjection(list(markets))
        self.keys = keys
        self.order_timeout_s = order_timeout_s
        self.client = Client(bus, markets, producer=f"gateway-{uuid.uuid4().hex[:8]}")
        self.snapshots: dict[str, MarginSnapshot] = {}
        self.orders: dict[int, dict] = {}  # order id -> what Binance reports about it
        self._reader: asyncio.Task | None = None

    # ---------------------------------------------------------------- plumbing

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_market_data())
        self.client.listen(self._account_event)
        await self.client.start()

    def _account_event(self, message) -> None:
        if isinstance(message, OrderAccepted):
            market = self.markets.get(message.market)
            if market is not None:
                self.orders[message.order_id] = {
                    "account": message.account, "market": market, "clientOrderId": message.client_order_id,
                    "side": message.side.name, "type": message.order_type.name, "tif": message.tif,
                    "price": message.price, "size": message.size, "executed": 0, "quote": 0,
                    "status": "NEW", "reduceOnly": message.reduce_only, "time": int(message.ts / 1e6)}
        elif isinstance(message, Fill):
            for order_id in (message.taker_order_id, message.maker_order_id):
                order = self.orders.get(order_id)
                if order is not None:
                    order["executed"] += message.size
                    order["quote"] += message.price * message.size * order["market"].value_per_tick_lot
                    order["status"] = "PARTIALLY_FILLED"
        elif isinstance(message, OrderClosed):
            order = self.orders.get(message.order_id)
            if order is not None:
                order["status"] = {CloseReason.FILLED: "FILLED", CloseReason.CANCELED: "CANCELED"}.get(
                    message.reason, "EXPIRED")
        elif isinstance(message, MarginSnapshot):
            known = self.snapshots.get(message.account)
            if known is None or message.seq >= known.seq:
                self.snapshots[message.account] = message

    async def stop(self) -> None:
        await self.client.stop()
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
            web.get("/fapi/v3/account", self.account),
            web.get("/fapi/v2/account", self.account),
            web.post("/fapi/v1/order", self.new_order),
            web.get("/fapi/v2/positionRisk", self.position_risk),
            web.get("/fapi/v3/positionRisk", self.position_risk),
            web.post("/fapi/v1/marginType", self.margin_type),
            web.post("/fapi/v1/leverage", self.leverage),
            web.post("/fapi/v1/positionMargin", self.position_margin),
            web.get("/fapi/v1/leverageBracket", self.leverage_bracket),
            web.get("/fapi/v1/order", self.query_order),
            web.delete("/fapi/v1/order", self.cancel_order),
            web.get("/fapi/v1/openOrders", self.open_orders),
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

    # ---------------------------------------------------------------- signed

    async def _signed(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """Verify Binance's HMAC-SHA256 signature and timestamp; (account, parameters)."""
        key = request.headers.get("X-MBX-APIKEY")
        found = self.keys.lookup(key) if (key and self.keys is not None) else None
        if found is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        secret, account = found
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
            window = int(params.get("recvWindow", "5000"))
        except (KeyError, ValueError):
            raise BinanceError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.") \
                from None
        now = int(time.time() * 1000)
        if not (now - window <= stamp <= now + 1000):
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        return account, params

    async def account(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        snapshot = self.snapshots.get(account)
        if snapshot is None:
            snapshot = MarginSnapshot("", 0, account, 0, 0, 0, [], [], 0)
        cross = next((b for b in snapshot.buckets if not b.market), None)
        unrealized = sum(p.unrealized_pnl for p in snapshot.positions)
        isolated = sum(p.isolated_margin for p in snapshot.positions)
        wallet = snapshot.balance + isolated
        margin_balance = wallet + unrealized
        initial = sum(p.initial_margin for p in snapshot.positions)
        maintenance = sum(p.maintenance_margin for p in snapshot.positions)
        usd = lambda micro: f"{micro / 1e6:.8f}"  # noqa: E731
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
    }

    async def _command(self, call) -> None:
        try:
            await asyncio.wait_for(call, self.order_timeout_s)
        except Rejected as exc:
            code, message = self.REJECTS.get(exc.reason, (-1013, f"{exc.reason.name}: {exc.detail}"))
            raise BinanceError(code, message) from None
        except TimeoutError:
            raise BinanceError(-1007, "Timeout waiting for response from backend server.", 408) from None

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
        try:
            leverage = int(params["leverage"])
        except (KeyError, ValueError):
            raise BinanceError(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.") \
                from None
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
        amount = params["amount"] if kind == "1" else f"-{params['amount']}"
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
        snapshot = self.snapshots.get(account)
        usd = lambda micro: f"{micro / 1e6:.8f}"  # noqa: E731
        rows = []
        for position in snapshot.positions if snapshot else []:
            market = self.markets[position.market]
            if wanted is not None and market is not wanted:
                continue
            size = abs(position.signed_size)
            entry = position.entry_value / (size * market.value_per_tick_lot) if size else 0
            rows.append({
                "symbol": binance_symbol(market), "positionSide": "BOTH",
                "positionAmt": market.format_size(position.signed_size), "entryPrice": f"{entry:.8f}",
                "breakEvenPrice": f"{entry:.8f}", "markPrice": market.format_price(position.mark_price),
                "unRealizedProfit": usd(position.unrealized_pnl),
                "liquidationPrice": market.format_price(position.liquidation_price),
                "isolatedMargin": usd(position.isolated_margin), "isolatedWallet": usd(position.isolated_margin),
                "notional": usd(position.signed_size * position.mark_price * market.value_per_tick_lot),
                "marginAsset": "USDT", "leverage": str(position.leverage),
                "marginType": "isolated" if position.mode is MarginMode.ISOLATED else "cross",
                "initialMargin": usd(position.initial_margin), "maintMargin": usd(position.maintenance_margin),
                "positionInitialMargin": usd(position.initial_margin), "openOrderInitialMargin": "0",
                "adl": 0, "bidNotional": "0", "askNotional": "0", "isAutoAddMargin": "false",
                "maxNotionalValue": "10000000", "updateTime": int(snapshot.ts / 1e6)})
        return web.json_response(rows)

    async def new_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self.by_symbol.get(params.get("symbol", "").upper())
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        try:
            side = {"BUY": Side.BUY, "SELL": Side.SELL}[params.get("side", "")]
            kind = params.get("type", "")
            if kind not in ("LIMIT", "MARKET"):
                raise BinanceError(-1116, "Invalid orderType.")
            tif = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK,
                   "GTX": TimeInForce.POST_ONLY}[params.get("timeInForce", "GTC")]
        except KeyError as exc:
            raise BinanceError(-1102, f"Mandatory parameter {exc} was not sent, was empty/null, or malformed.") \
                from None
        if "quantity" not in params:
            raise BinanceError(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        price = params.get("price") if kind == "LIMIT" else None
        if kind == "LIMIT" and price is None:
            raise BinanceError(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        client_order_id = params.get("newClientOrderId") or uuid.uuid4().hex[:20]
        try:
            result = await asyncio.wait_for(self.client.place(
                account, market.symbol, side, params["quantity"], price, tif=tif,
                reduce_only=params.get("reduceOnly", "false").lower() == "true", stp=SelfTradePrevention.CANCEL_TAKER,
                client_order_id=client_order_id), self.order_timeout_s)
        except Rejected as exc:
            code, message = self.REJECTS.get(exc.reason, (-1013, f"{exc.reason.name}: {exc.detail}"))
            raise BinanceError(code, message) from None
        except TimeoutError:
            raise BinanceError(-1007, "Timeout waiting for response from backend server. Send status unknown; "
                                      "execution status unknown.", 408) from None
        return web.json_response(self._order_json(market, result, kind, side, tif, client_order_id))

    def _order_json(self, market: Market, result: OrderResult, kind: str, side: Side, tif: TimeInForce,
                    client_order_id: str) -> dict:
        order_id = result.order_id
        fills = [m for m in self.client.events if isinstance(m, Fill) and order_id in (m.taker_order_id,
                                                                                          m.maker_order_id)]
        executed = sum(f.size for f in fills)
        quote = sum(f.price * f.size * market.value_per_tick_lot for f in fills)
        closed = result.closed or next((m for m in self.client.events if isinstance(m, OrderClosed)
                                         and m.order_id == order_id), None)
        if closed is None:
            status = "PARTIALLY_FILLED" if executed else "NEW"
        elif closed.reason is CloseReason.FILLED:
            status = "FILLED"
        elif closed.reason is CloseReason.CANCELED:
            status = "CANCELED"
        else:
            status = "EXPIRED"
        accepted: OrderAccepted = result.accepted
        average = quote / (executed * market.value_per_tick_lot) if executed else 0
        return {
            "orderId": order_id, "symbol": binance_symbol(market), "status": status, "clientOrderId": client_order_id,
            "price": market.format_price(accepted.price if kind == "LIMIT" else 0),
            "avgPrice": market.format_price(round(average)) if executed else "0",
            "origQty": market.format_size(accepted.size), "executedQty": market.format_size(executed),
            "cumQuote": f"{quote / 1e6:.8f}", "timeInForce": {TimeInForce.POST_ONLY: "GTX"}.get(tif, tif.name),
            "type": kind, "reduceOnly": accepted.reduce_only, "closePosition": False,
            "side": side.name, "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": kind, "updateTime": int(time.time() * 1000),
        }

    # ---------------------------------------------------------------- orders

    def _order_view(self, order_id: int, order: dict) -> dict:
        market = order["market"]
        executed = order["executed"]
        average = order["quote"] / (executed * market.value_per_tick_lot) if executed else 0
        kind = order["type"]
        tif = "GTX" if order["tif"] is TimeInForce.POST_ONLY else order["tif"].name
        return {"orderId": order_id, "symbol": binance_symbol(market), "status": order["status"],
                "clientOrderId": order["clientOrderId"],
                "price": market.format_price(order["price"] if kind == "LIMIT" else 0),
                "avgPrice": market.format_price(round(average)) if executed else "0",
                "origQty": market.format_size(order["size"]), "executedQty": market.format_size(executed),
                "cumQuote": f"{order['quote'] / 1e6:.8f}", "timeInForce": tif, "type": kind,
                "reduceOnly": order["reduceOnly"], "closePosition": False, "side": order["side"],
                "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
                "origType": kind, "time": order["time"], "updateTime": int(time.time() * 1000)}

    def _find_order(self, account: str, params: dict[str, str], code: int, message: str) -> tuple[int, dict]:
        market = self._signed_market(params)
        if "orderId" in params:
            try:
                order_id = int(params["orderId"])
            except ValueError:
                raise BinanceError(code, message) from None
            order = self.orders.get(order_id)
        else:
            wanted = params.get("origClientOrderId")
            order_id, order = next(((i, o) for i, o in self.orders.items()
                                    if o["clientOrderId"] == wanted and o["account"] == account), (0, None))
        if order is None or order["account"] != account or order["market"] is not market:
            raise BinanceError(code, message)  # another account's order is no more visible than a missing one
        return order_id, order

    async def query_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        order_id, order = self._find_order(account, params, -2013, "Order does not exist.")
        return web.json_response(self._order_view(order_id, order))

    async def cancel_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        order_id, order = self._find_order(account, params, -2011, "Unknown order sent.")
        if order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            raise BinanceError(-2011, "Unknown order sent.")
        await self._command(self.client.cancel(account, order["market"].symbol, order_id))
        order["status"] = "CANCELED"
        return web.json_response(self._order_view(order_id, order))

    async def open_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        market = self._signed_market(params) if "symbol" in params else None
        return web.json_response([self._order_view(i, o) for i, o in self.orders.items()
                                  if o["account"] == account and o["status"] in ("NEW", "PARTIALLY_FILLED")
                                  and (market is None or o["market"] is market)])
