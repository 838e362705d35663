"""Binance's signed account and order endpoints (``/fapi/v1/order``, ``/fapi/v2/positionRisk``,
``/fapi/v1/listenKey`` ...), over the host's ledger and client."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid

from aiohttp import web

from exchange.markets import Market
from schemas.enums import MarginMode, RejectReason, SelfTradePrevention, Side, TimeInForce
from schemas.events import MAX_LEVERAGE
from services.client import Rejected
from services.gateway.binance.algo import CONDITIONAL_TYPES
from services.gateway.binance.context import BinanceContext
from services.gateway.binance.params import BATCH_LIMIT, BinanceError, client_id_param, decimal, number
from services.gateway.binance.wire import INCOME_NAMES, binance_symbol, order_json, shown_client_id, trade_json
from services.gateway.ledger import LIVE, OrderKind, entry_price, money


UNBOUNDED_NOTIONAL = 10**13  # micro units (10,000,000 USDT): the last tier's cap, which has none


def max_notional(market: Market, leverage: int) -> int:
    """The largest notional (micro units) a position may have at ``leverage``: the cap of the
    last maintenance tier that still allows it (Binance's ``maxNotionalValue``)."""
    tiers = market.tiers
    cap = tiers[1].floor if len(tiers) > 1 else UNBOUNDED_NOTIONAL
    for index, tier in enumerate(tiers):
        if tier.max_leverage >= leverage:
            cap = tiers[index + 1].floor if index + 1 < len(tiers) else UNBOUNDED_NOTIONAL
    return cap


class TradingApi:
    def __init__(self, context: BinanceContext):
        self.context = context
        self.markets = context.markets
        self.ledger = context.ledger
        self.client = context.client
        self.order_timeout_s = context.order_timeout_s
        self.listen_keys = context.listen_keys

    def routes(self) -> list:
        return [
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
            web.get("/fapi/v1/symbolConfig", self.symbol_config),
            web.get("/fapi/v1/accountConfig", self.account_config),
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
        ]

    async def account(self, request: web.Request) -> web.Response:
        account, _ = await self.context.signed(request)
        snapshot = self.ledger.valued(account)
        cross = next((b for b in snapshot.buckets if not b.market), None)
        unrealized = sum(p.unrealized_pnl for p in snapshot.positions)
        isolated = sum(p.isolated_margin for p in snapshot.positions)
        wallet = snapshot.balance + isolated
        margin_balance = wallet + unrealized
        initial = sum(p.initial_margin for p in snapshot.positions)
        maintenance = sum(p.maintenance_margin for p in snapshot.positions)
        # what open orders reserve: the cross bucket's equity less its positions' initial
        # margin and what is still available (risk's available_to_trade is net of it)
        open_orders = max(0, cross.equity - cross.initial_margin - snapshot.available_to_trade) if cross else 0
        usd = money
        asset = {"asset": "USDT", "walletBalance": usd(wallet), "unrealizedProfit": usd(unrealized),
                 "marginBalance": usd(margin_balance), "maintMargin": usd(maintenance),
                 "initialMargin": usd(initial + open_orders), "positionInitialMargin": usd(initial),
                 "openOrderInitialMargin": usd(open_orders), "crossWalletBalance": usd(snapshot.balance),
                 "crossUnPnl": usd(cross.equity - snapshot.balance if cross else 0),
                 "availableBalance": usd(snapshot.available_to_trade), "maxWithdrawAmount": usd(snapshot.withdrawable),
                 "updateTime": int(snapshot.ts / 1e6)}
        return web.json_response({
            # what Binance's account answer opens with (nautilus_trader's adapter requires them)
            "feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True, "updateTime": 0,
            "multiAssetsMargin": False, "tradeGroupId": -1,
            "totalInitialMargin": usd(initial + open_orders), "totalMaintMargin": usd(maintenance),
            "totalWalletBalance": usd(wallet), "totalUnrealizedProfit": usd(unrealized),
            "totalMarginBalance": usd(margin_balance), "totalPositionInitialMargin": usd(initial),
            "totalOpenOrderInitialMargin": usd(open_orders),
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

    async def symbol_config(self, request: web.Request) -> web.Response:
        """Each market's margin mode and leverage for the account (ccxt's fetchMarginModes,
        nautilus_trader's execution client at connect), also in markets where it holds no
        position."""
        account, params = await self.context.signed(request)
        chosen = [self.context.signed_market(params)] if "symbol" in params else list(self.markets.values())
        rows = []
        for market in chosen:
            mode, leverage = self.ledger.setting(account, market)
            rows.append({"symbol": binance_symbol(market),
                         "marginType": "ISOLATED" if mode is MarginMode.ISOLATED else "CROSSED",
                         "isAutoAddMargin": False, "leverage": leverage,
                         "maxNotionalValue": f"{max_notional(market, leverage) / 1e6:.0f}"})
        return web.json_response(rows)

    async def account_config(self, request: web.Request) -> web.Response:
        await self.context.signed(request)
        return web.json_response({"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                                  "dualSidePosition": False, "updateTime": 0, "multiAssetsMargin": False,
                                  "tradeGroupId": -1})

    async def margin_type(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params)
        mode = {"ISOLATED": MarginMode.ISOLATED, "CROSSED": MarginMode.CROSS}.get(params.get("marginType", "").upper())
        if mode is None:
            raise BinanceError(-1116, "Invalid marginType.")
        await self.context.command(self.client.set_margin_mode(account, market.symbol, mode))
        return web.json_response({"code": 200, "msg": "success"})

    async def leverage(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params)
        leverage = number(params, "leverage")
        if leverage is None:
            raise BinanceError(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.")
        if not 1 <= leverage <= MAX_LEVERAGE:
            raise BinanceError(-4028, "Leverage is not valid.")
        await self.context.command(self.client.set_leverage(account, market.symbol, leverage))
        return web.json_response({"leverage": leverage, "maxNotionalValue": f"{max_notional(market, leverage) / 1e6:.0f}",
                                  "symbol": binance_symbol(market)})

    async def position_margin(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params)
        kind = params.get("type")
        if kind not in ("1", "2") or "amount" not in params:
            raise BinanceError(-1102, "Mandatory parameters 'amount' and 'type' (1 add, 2 reduce) must be sent.")
        amount = decimal(params, "amount") if kind == "1" else f"-{decimal(params, 'amount')}"
        await self.context.command(self.client.adjust_margin(account, market.symbol, amount))
        return web.json_response({"amount": float(params["amount"]), "code": 200,
                                  "msg": "Successfully modify position margin.", "type": int(kind)})

    async def leverage_bracket(self, request: web.Request) -> web.Response:
        """The market's maintenance tiers, as Binance's notional brackets."""
        _, params = await self.context.signed(request)
        chosen = [self.context.signed_market(params)] if "symbol" in params else list(self.markets.values())
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
        account, params = await self.context.signed(request)
        wanted = self.context.signed_market(params) if "symbol" in params else None
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
                "maxNotionalValue": f"{max_notional(market, position.leverage) / 1e6:.0f}",
                "updateTime": snapshot.ts // 1_000_000})
        return web.json_response(rows)

    async def balance(self, request: web.Request) -> web.Response:
        account, _ = await self.context.signed(request)
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
        _, params = await self.context.signed(request)
        market = self.context.signed_market(params)
        return web.json_response({"symbol": binance_symbol(market),
                                  "makerCommissionRate": f"{market.maker_fee_ppm / 1e6:.6f}",
                                  "takerCommissionRate": f"{market.taker_fee_ppm / 1e6:.6f}"})

    async def position_mode(self, request: web.Request) -> web.Response:
        await self.context.signed(request)
        return web.json_response({"dualSidePosition": False})

    async def set_position_mode(self, request: web.Request) -> web.Response:
        """One-way mode only: perpsim keeps one position per market and account."""
        _, params = await self.context.signed(request)
        if params.get("dualSidePosition", "").lower() == "true":
            raise BinanceError(-4059, "perpsim supports one-way position mode only (dualSidePosition=false).")
        raise BinanceError(-4059, "No need to change position side.")

    async def multi_assets(self, request: web.Request) -> web.Response:
        await self.context.signed(request)
        return web.json_response({"multiAssetsMargin": False})

    async def set_multi_assets(self, request: web.Request) -> web.Response:
        """Single-asset mode only: USDT is the one margin asset."""
        _, params = await self.context.signed(request)
        if params.get("multiAssetsMargin", "").lower() == "true":
            raise BinanceError(-4171, "perpsim supports single-asset margin mode only (multiAssetsMargin=false).")
        raise BinanceError(-4171, "Multi-Assets Mode is already set.")

    # ---------------------------------------------------------------- orders

    async def new_order(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        return web.json_response(await self._place(account, params))

    async def batch_orders(self, request: web.Request) -> web.Response:
        """Up to five orders, placed concurrently; each answered by its order or its error."""
        account, params = await self.context.signed(request)
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
        market = self.context.signed_market(params)
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
        client_order_id = client_id_param(params, "newClientOrderId") or uuid.uuid4().hex[:20]
        if any(o.client_order_id == client_order_id for o in self.ledger.open_orders(account)):
            raise BinanceError(-4015, "Client order id is not valid.")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        try:
            result = await self.context.command(self.client.place(
                account, market.symbol, side, params["quantity"], price, tif=tif, reduce_only=reduce_only,
                stp=SelfTradePrevention.CANCEL_TAKER, client_order_id=client_order_id),
                lookup=f"The order may be live: query it with origClientOrderId={client_order_id}.")
        except BinanceError as error:
            refused = error.__cause__
            if isinstance(refused, Rejected) and refused.reason is RejectReason.FOK_NOT_FILLABLE and refused.order_id:
                # Binance accepts such an FOK order and expires it at once
                return order_json(self.ledger.expired(refused.order_id, account, market, client_order_id, side,
                                                      OrderKind[kind], tif, market.price_to_ticks(price) if price else 0,
                                                      market.size_to_lots(params["quantity"]), reduce_only))
            raise
        order = self.ledger.orders.get(result.order_id)
        if order is None:  # forgotten already: only in a flood of orders
            raise BinanceError(-1007, "Timeout waiting for response from backend server.", 408)
        return order_json(order)

    def _find_order(self, account: str, params: dict[str, str], code: int, message: str):
        market = self.context.signed_market(params)
        if "orderId" in params:
            order = self.ledger.orders.get(number(params, "orderId"))
        elif "origClientOrderId" in params:
            wanted = params["origClientOrderId"]
            order = next((o for o in reversed(self.ledger.by_account.get(account, {}).values())
                          if shown_client_id(o) == wanted), None)
        else:
            raise BinanceError(-1102, "Either orderId or origClientOrderId must be sent.")
        if order is None or order.account != account or order.market is not market:
            raise BinanceError(code, message)  # another account's order is no more visible than a missing one
        return order

    async def query_order(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        return web.json_response(order_json(self._find_order(account, params, -2013, "Order does not exist.")))

    async def query_open_order(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        order = self._find_order(account, params, -2013, "Order does not exist.")
        if order.status not in LIVE:
            raise BinanceError(-2013, "Order does not exist.")
        return web.json_response(order_json(order))

    async def cancel_order(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        order = self._find_order(account, params, -2011, "Unknown order sent.")
        if order.status not in LIVE:
            raise BinanceError(-2011, "Unknown order sent.")
        await self.context.command(self.client.cancel(account, order.market.symbol, order.order_id))
        return web.json_response(order_json(order))

    async def modify_order(self, request: web.Request) -> web.Response:
        """Binance's modify: a resting LIMIT order's price and quantity (its side must match)."""
        account, params = await self.context.signed(request)
        order = self._find_order(account, params, -2013, "Order does not exist.")
        if order.status not in LIVE:
            raise BinanceError(-2013, "Order does not exist.")
        if order.kind is not OrderKind.LIMIT:
            raise BinanceError(-4000, "Only LIMIT orders can be modified.")
        if params.get("side", order.side.name).upper() != order.side.name:
            raise BinanceError(-4000, "The side of an order cannot be modified.")
        market = order.market
        price = decimal(params, "price") or market.format_price(order.price)
        quantity = decimal(params, "quantity") or market.format_size(order.size)
        # Binance: "a modified order is reordered in the match queue", whatever changed
        await self.context.command(self.client.amend(account, market.symbol, order.order_id, price, quantity, requeue=True))
        return web.json_response(order_json(order))

    async def cancel_all(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params)

        async def cancel(order) -> None:
            try:
                await asyncio.wait_for(self.client.cancel(account, market.symbol, order.order_id), self.order_timeout_s)
            except Rejected:
                pass  # it ended meanwhile: filled or expired
        await asyncio.gather(*(cancel(order) for order in self.ledger.open_orders(account, market)))
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order is done."})

    async def open_orders(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params) if "symbol" in params else None
        return web.json_response([order_json(o) for o in self.ledger.open_orders(account, market)])

    async def all_orders(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params)
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
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params) if "symbol" in params else None
        kind = params.get("autoCloseType", "").upper()
        if kind not in ("", "LIQUIDATION", "ADL"):
            raise BinanceError(-1116, "Invalid autoCloseType.")
        start, end = number(params, "startTime"), number(params, "endTime")
        limit = number(params, "limit", 50, 1, 100)
        chosen = [o for o in self.ledger.forced_orders(account, market) if (not kind or o.kind is OrderKind[kind])
                  and (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)]
        return web.json_response([order_json(o) for o in chosen[-limit:]])

    async def user_trades(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params)
        from_id, order_id = number(params, "fromId"), number(params, "orderId")
        start, end = number(params, "startTime"), number(params, "endTime")
        limit = number(params, "limit", 500, 1, 1000)
        trades = [t for t in self.ledger.account(account).trades if t.market is market
                  and (from_id is None or t.trade_id >= from_id) and (order_id is None or t.order_id == order_id)
                  and (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)]
        trades = trades[:limit] if (from_id is not None or start is not None) else trades[-limit:]
        return web.json_response([trade_json(t) for t in trades])

    async def income(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        market = self.context.signed_market(params) if "symbol" in params else None
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
        account = self.context.api_key_account(request)
        key = next((k for k, a in self.listen_keys.items() if a == account), None)
        if key is None:
            key = secrets.token_urlsafe(48)
            self.listen_keys[key] = account
        return web.json_response({"listenKey": key})

    async def keep_listen_key(self, request: web.Request) -> web.Response:
        account = self.context.api_key_account(request)
        key = next((k for k, a in self.listen_keys.items() if a == account), None)
        if key is None:
            raise BinanceError(-1125, "This listenKey does not exist.")
        return web.json_response({"listenKey": key})

    async def close_listen_key(self, request: web.Request) -> web.Response:
        account = self.context.api_key_account(request)
        for key in [k for k, a in self.listen_keys.items() if a == account]:
            self.context.hub.close_user(key)
            del self.listen_keys[key]
        return web.json_response({})
