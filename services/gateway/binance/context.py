"""What the Binance dialect's handlers share: the host's views, Binance's symbols, its
request signing (HMAC-SHA256 over the query, API keys in ``X-MBX-APIKEY``), its answers
to a refused or unanswered command, and the user data streams' listen keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from urllib.parse import parse_qsl

from aiohttp import web

from exchange.markets import Market
from schemas.enums import RejectReason
from services.client import Rejected
from services.gateway.binance.params import RECV_WINDOW_MAX_MS, BinanceError, number
from services.gateway.binance.streams import StreamHub
from services.gateway.binance.wire import binance_symbol
from services.gateway.host import GatewayHost


class BinanceContext:
    def __init__(self, host: GatewayHost):
        self.host = host
        self.markets = host.markets
        self.projection = host.projection
        self.ledger = host.ledger
        self.client = host.client
        self.keys = host.keys
        self.order_timeout_s = host.order_timeout_s
        self.by_symbol = {binance_symbol(m): m for m in host.markets.values()}
        self.listen_keys: dict[str, str] = {}  # listen key -> account
        self.hub = StreamHub(host.markets, host.projection, self.listen_keys)

    def market(self, request: web.Request, required: bool = True) -> Market | None:
        symbol = request.query.get("symbol")
        if symbol is None:
            if required:
                raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        market = self.by_symbol.get(symbol.upper())
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    async def signed(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """Verify Binance's HMAC-SHA256 signature and timestamp; (account, parameters)."""
        secret, account = self.api_key(request)
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

    async def command(self, call, lookup: str = ""):
        """``call``'s answer; a refusal as Binance's code (the ``Rejected`` is the cause),
        no answer in time as ``-1007``; ``lookup`` says how to find what may have been done
        anyway (an order goes on, and is found by its client id as soon as it is live)."""
        try:
            return await asyncio.wait_for(call, self.order_timeout_s)
        except Rejected as exc:
            code, message = self.REJECTS.get(exc.reason, (-1013, f"{exc.reason.name}: {exc.detail}"))
            raise BinanceError(code, message) from exc
        except TimeoutError:
            raise BinanceError(-1007, "Timeout waiting for response from backend server. Send status unknown; "
                                      f"execution status unknown.{' ' + lookup if lookup else ''}", 408) from None

    def signed_market(self, params: dict[str, str]) -> Market:
        market = self.by_symbol.get(params.get("symbol", "").upper())
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    def api_key(self, request: web.Request) -> tuple[str, str]:
        """(secret, account) of the request's API key, or Binance's -2015."""
        key = request.headers.get("X-MBX-APIKEY")
        found = self.keys.lookup(key) if (key and self.keys is not None) else None
        if found is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return found

    def api_key_account(self, request: web.Request) -> str:
        return self.api_key(request)[1]

