"""Binance USD-M's Algo Order API: conditional orders (STOP, STOP_MARKET, TAKE_PROFIT,
TAKE_PROFIT_MARKET, TRAILING_STOP_MARKET), which Binance takes only here since December
2025 (its ``/fapi/v1/order`` answers ``-4120`` for them), as the pinned ccxt calls it:

- ``POST /fapi/v1/algoOrder`` (``algoType=CONDITIONAL``), ``GET`` and ``DELETE`` it by
  ``algoId`` or ``clientAlgoId``;
- ``GET /fapi/v1/openAlgoOrders``, ``GET /fapi/v1/allAlgoOrders``,
  ``DELETE /fapi/v1/algoOpenOrders``.

Each is a conditional order of the core (docs/matching.md, "Conditional orders"); the
order it becomes when it fires is on the plain order endpoints, under its
``actualOrderId``. Binance numbers the two apart, and so does the gateway
(``wire.ALGO_ID_OFFSET``): a bot's order cache never mixes them up. Status changes reach the user data stream as
``ALGO_UPDATE``. ``priceProtect`` is accepted and reported but not enforced.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from aiohttp import web

from schemas.enums import (
    Condition,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from services.client import Rejected
from services.gateway.binance.context import BinanceContext
from services.gateway.binance.params import BinanceError, client_id_param, decimal, number
from services.gateway.binance.wire import ALGO_ID_OFFSET, algo_id, algo_json
from services.gateway.ledger import ConditionalStatus

CONDITIONAL_TYPES = {  # Binance type -> (condition, becomes a limit order)
    "STOP": (Condition.STOP, True),
    "STOP_MARKET": (Condition.STOP, False),
    "TAKE_PROFIT": (Condition.TAKE_PROFIT, True),
    "TAKE_PROFIT_MARKET": (Condition.TAKE_PROFIT, False),
    "TRAILING_STOP_MARKET": (Condition.TRAILING_STOP, False),
}
WORKING_TYPES = {"MARK_PRICE": TriggerSource.MARK, "CONTRACT_PRICE": TriggerSource.LAST}


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").lower() == "true"


def accepted_json(order) -> dict:
    """The answer to a placement: the order as it was accepted (``NEW``), as Binance answers
    it. A stop whose price was reached in the milliseconds after it was accepted shows
    ``TRIGGERED`` to the next query, not in this answer: Freqtrade took a placement answered
    ``TRIGGERED`` for a closed order and placed its stop again, 30 times in 3 minutes."""
    answer = algo_json(order)
    if order.status is not ConditionalStatus.WAITING:
        answer.update(algoStatus="NEW", actualOrderId="", triggerTime=0, updateTime=answer["createTime"],
                      failedReason="")
    return answer


class AlgoOrders:
    """The algo order endpoints, over the dialect's shared context."""

    def __init__(self, context: BinanceContext):
        self.context = context

    def routes(self) -> list:
        return [
            web.post("/fapi/v1/algoOrder", self.place),
            web.get("/fapi/v1/algoOrder", self.query),
            web.delete("/fapi/v1/algoOrder", self.cancel),
            web.get("/fapi/v1/openAlgoOrders", self.open_orders),
            web.get("/fapi/v1/allAlgoOrders", self.all_orders),
            web.delete("/fapi/v1/algoOpenOrders", self.cancel_all),
        ]

    async def place(self, request: web.Request) -> web.Response:
        context = self.context
        account, params = await context.signed(request)
        if params.get("algoType", "").upper() != "CONDITIONAL":
            raise BinanceError(-1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        market = context.signed_market(params)
        side = {"BUY": Side.BUY, "SELL": Side.SELL}.get(params.get("side", "").upper())
        if side is None:
            raise BinanceError(-1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        kind = params.get("type", "").upper()
        if kind not in CONDITIONAL_TYPES:
            raise BinanceError(-1116, "Invalid orderType.")
        condition, limit = CONDITIONAL_TYPES[kind]
        if params.get("positionSide", "BOTH").upper() != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        source = WORKING_TYPES.get(params.get("workingType", "CONTRACT_PRICE").upper())
        if source is None:
            raise BinanceError(-1116, "Invalid workingType.")
        tif = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK,
               "GTX": TimeInForce.POST_ONLY}.get(params.get("timeInForce", "GTC").upper())
        if tif is None:
            raise BinanceError(-1115, "Invalid timeInForce.")
        close = _flag(params, "closePosition")
        reduce_only = _flag(params, "reduceOnly")
        quantity = decimal(params, "quantity")
        if close:
            if quantity is not None and Decimal(quantity) != 0:
                raise BinanceError(-4137, "Quantity must be zero with closePosition equals true.")
            if reduce_only:
                raise BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
            if limit or condition is Condition.TRAILING_STOP:
                raise BinanceError(-4136, f"Target strategy invalid for orderType {kind},closePosition true")
            quantity = "0"
        elif quantity is None:
            raise BinanceError(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        price = decimal(params, "price") if limit else None
        if limit and price is None:
            raise BinanceError(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        trigger = activation = callback = None
        if condition is Condition.TRAILING_STOP:
            callback = decimal(params, "callbackRate")
            if callback is None:
                raise BinanceError(-1102, "Mandatory parameter 'callbackRate' was not sent, was empty/null, or "
                                          "malformed.")
            tenths = Decimal(callback) * 10
            if tenths != tenths.to_integral_value() or not 1 <= tenths <= 100:
                raise BinanceError(-2007, "Invalid callBack rate.")  # 0.1 to 10, by 0.1
            activation = decimal(params, "activatePrice") or decimal(params, "activationPrice")
        else:
            trigger = decimal(params, "triggerPrice") or decimal(params, "stopPrice")
            if trigger is None:
                raise BinanceError(-1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or "
                                          "malformed.")
        client_id = client_id_param(params, "clientAlgoId", "newClientOrderId") or uuid.uuid4().hex[:20]
        if any(o.client_order_id == client_id for o in context.ledger.open_conditionals(account)):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        try:
            result = await context.command(context.client.place_conditional(
                account, market.symbol, side, quantity, condition, trigger=trigger, price=price, source=source,
                reduce_only=reduce_only, close_position=close, activation=activation, callback_pct=callback,
                tif=tif, stp=SelfTradePrevention.CANCEL_TAKER, client_order_id=client_id),
                lookup=f"The order may be live: query it with clientAlgoId={client_id}.")
        except BinanceError as error:
            refused = error.__cause__
            if isinstance(refused, Rejected) and refused.reason is RejectReason.WOULD_TRIGGER_IMMEDIATELY:
                if condition is Condition.TRAILING_STOP:
                    raise BinanceError(-4135, "Invalid activation price.") from refused
                raise BinanceError(-2021, "Order would immediately trigger.") from refused
            if isinstance(refused, Rejected) and refused.reason is RejectReason.INVALID_TRIGGER:
                raise BinanceError(-1102, f"Invalid trigger: {refused.detail}") from refused
            raise
        order = context.ledger.conditionals.get(result.order_id)
        if order is None:
            raise BinanceError(-1007, "Timeout waiting for response from backend server.", 408)
        return web.json_response(accepted_json(order))

    def _find(self, account: str, params: dict[str, str]):
        mine = self.context.ledger.conditionals_of.get(account, {})
        if "algoId" in params:
            order = mine.get(number(params, "algoId") - ALGO_ID_OFFSET)
        elif "clientAlgoId" in params:
            wanted = params["clientAlgoId"]
            order = next((o for o in reversed(mine.values()) if o.client_order_id == wanted), None)
        else:
            raise BinanceError(-1102, "Either algoId or clientAlgoId must be sent.")
        if order is None:
            raise BinanceError(-2013, "Order does not exist.")
        return order

    async def query(self, request: web.Request) -> web.Response:
        account, params = await self.context.signed(request)
        return web.json_response(algo_json(self._find(account, params)))

    async def cancel(self, request: web.Request) -> web.Response:
        context = self.context
        account, params = await context.signed(request)
        order = self._find(account, params)
        if order.status is not ConditionalStatus.WAITING:
            raise BinanceError(-2011, "Unknown order sent.")
        await context.command(context.client.cancel(account, order.market.symbol, order.order_id))
        return web.json_response({"algoId": algo_id(order), "clientAlgoId": order.client_order_id, "code": "200",
                                  "msg": "success"})

    async def open_orders(self, request: web.Request) -> web.Response:
        context = self.context
        account, params = await context.signed(request)
        market = context.signed_market(params) if "symbol" in params else None
        return web.json_response([algo_json(o) for o in context.ledger.open_conditionals(account, market)])

    async def all_orders(self, request: web.Request) -> web.Response:
        context = self.context
        account, params = await context.signed(request)
        market = context.signed_market(params)
        from_id = number(params, "algoId")
        from_id = None if from_id is None else from_id - ALGO_ID_OFFSET
        start, end = number(params, "startTime"), number(params, "endTime")
        limit = number(params, "limit", 500, 1, 1000)
        chosen = [o for o in context.ledger.conditionals_of.get(account, {}).values() if o.market is market
                  and (from_id is None or o.order_id >= from_id) and (start is None or o.time_ms >= start)
                  and (end is None or o.time_ms <= end)]
        chosen.sort(key=lambda o: o.order_id)
        chosen = chosen[:limit] if (from_id is not None or start is not None) else chosen[-limit:]
        return web.json_response([algo_json(o) for o in chosen])

    async def cancel_all(self, request: web.Request) -> web.Response:
        context = self.context
        account, params = await context.signed(request)
        market = context.signed_market(params)

        async def cancel(order) -> None:
            try:
                await asyncio.wait_for(context.client.cancel(account, market.symbol, order.order_id),
                                       context.order_timeout_s)
            except Rejected:
                pass  # it fired or ended meanwhile
        await asyncio.gather(*(cancel(order) for order in context.ledger.open_conditionals(account, market)))
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order is done."})
