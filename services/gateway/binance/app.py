"""The Binance USD-M dialect's application (aiohttp): Binance's paths, parameters, fields,
streams, rate limits and errors over a gateway host (``services.gateway.host``).

Public market data is served from the host's projection of ``market.data``
(``public.py``), accounts and orders from its ledger and client (``trading.py``,
``algo.py``). Symbols are Binance's (``SOLUSDT`` for ``SOL-PERP``), numbers decimal
strings, errors Binance's ``{"code", "msg"}`` with its codes, never a bare 500.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

from aiohttp import web

from schemas.enums import MarginMode
from schemas.events import MarginSnapshot, MarkPrice
from services.gateway.binance.algo import AlgoOrders
from services.gateway.binance.context import BinanceContext
from services.gateway.binance.limits import ORDERS, Limiter, RateLimits
from services.gateway.binance.params import BinanceError
from services.gateway.binance.public import PublicApi
from services.gateway.binance.trading import TradingApi
from services.gateway.binance.wire import MarginCall, margin_call_json, user_event
from services.gateway.host import BookLevels, GatewayHost
from services.gateway.ledger import AccountUpdate, UserEvent

log = logging.getLogger(__name__)

RATE_HEADERS = web.RequestKey("rate_headers", dict)  # the rate limits' headers of a request's answer
MARGIN_CALL_RATIO_PPB = 800_000_000  # MM / margin balance at which Binance sends a margin call (80%)


class MarginCalls:
    """Binance's margin call: once per bucket when its maintenance margin reaches 80% of its
    equity, again only after it fell below; the buckets called together in one call."""

    def __init__(self) -> None:
        self.called: dict[str, set[str]] = {}  # account -> buckets under a margin call

    def check(self, snapshot: MarginSnapshot) -> MarginCall | None:
        called_buckets = self.called.setdefault(snapshot.account, set())
        called = []
        for bucket in snapshot.buckets:
            ratio = bucket.margin_ratio_ppb
            high = ratio == -1 or ratio >= MARGIN_CALL_RATIO_PPB
            if high and bucket.market not in called_buckets:
                called_buckets.add(bucket.market)
                called.extend(p for p in snapshot.positions
                              if (p.market if p.mode is MarginMode.ISOLATED else "") == bucket.market)
            elif not high:
                called_buckets.discard(bucket.market)
        return MarginCall(snapshot, called) if called else None


class BinanceApi:
    """One Binance front over a host: its routes and middlewares, and its tap on the host's
    events (the user data streams, margin calls and market streams)."""

    def __init__(self, host: GatewayHost, limits: RateLimits | None):
        self.host = host
        self.context = BinanceContext(host)
        self.hub = self.context.hub
        self.limiter = Limiter(limits) if limits is not None else None
        self.margin_calls = MarginCalls()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._limits])
        hub = self.hub
        app.add_routes([
            *PublicApi(self.context).routes(),
            *TradingApi(self.context).routes(),
            *AlgoOrders(self.context).routes(),
            web.get("/ws", hub.handle),
            web.get("/ws/{tail:.*}", hub.handle),
            web.get("/stream", hub.handle),
            web.get("/{category:public|market|private}/ws", hub.handle),
            web.get("/{category:public|market|private}/ws/{tail:.*}", hub.handle),
            web.get("/{category:public|market|private}/stream", hub.handle),
        ])
        self.host.taps.append(self)

        async def detach(_app) -> None:  # the streams do not outlive the server
            if self in self.host.taps:
                self.host.taps.remove(self)
            await hub.close()

        app.on_cleanup.append(detach)
        return app

    # ------------------------------------------------------------ the host's tap

    def listening(self, account: str) -> bool:
        return self.hub.listening(account)

    def user(self, account: str, event: UserEvent) -> None:
        self.hub.user(account, user_event(event, self.host.markets))
        if isinstance(event, AccountUpdate):
            self._margin_call(account)

    def market(self, message: object, before: BookLevels | None) -> None:
        self.hub.market(message, before)
        if isinstance(message, MarkPrice):  # margin calls for the accounts streamed that hold a position there
            for account in [a for a, connections in self.hub.users.items() if connections]:
                state = self.host.ledger.accounts.get(account)
                snapshot = state.snapshot if state else None
                if snapshot is not None and any(p.market == message.market for p in snapshot.positions):
                    self._margin_call(account)

    def _margin_call(self, account: str) -> None:
        call = self.margin_calls.check(self.host.ledger.valued(account))
        if call is not None:
            self.hub.user(account, margin_call_json(call, self.host.markets))

    # ------------------------------------------------------------ middlewares

    @web.middleware
    async def _limits(self, request: web.Request, handler):
        """Binance's answer to an overloaded venue (-1008, HTTP 503) for new orders, and its
        rate limits (services/gateway/binance/limits.py): the request's weight, and a new
        order's count, before it is served; their headers on the answer."""
        if (request.method, request.path) in ORDERS and (busy := self.host.overloaded()):
            log.warning("gateway overloaded, %s %s refused: %s", request.method, request.path, busy)
            raise BinanceError(-1008, "Server is currently overloaded with other requests. Please try again in a "
                                      "few minutes.", 503)
        if self.limiter is None or not request.path.startswith("/fapi/"):
            return await handler(request)
        request[RATE_HEADERS] = self.limiter.weigh(request)
        if (request.method, request.path) in ORDERS:
            keys = self.host.keys
            found = keys.lookup(request.headers.get("X-MBX-APIKEY", "")) if keys is not None else None
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
