"""Binance USD-M's rate limits, enforced as Binance enforces them, so that a bot's handling
of them can be tested: a request weight per IP per minute (``X-MBX-USED-WEIGHT-1M``,
answered with HTTP 429 and code -1003 past it) and an order count per account per 10
seconds and per minute (``X-MBX-ORDER-COUNT-10S``, ``X-MBX-ORDER-COUNT-1M``; 429 and
-1015 past them). Windows are fixed and aligned, as Binance's (the minute's count resets
on the minute). Defaults are Binance's published limits; ``--rate-limits off`` lifts them.

Weights are Binance's (its USD-M docs, per endpoint and, for some, per parameter): orders
weigh 0 on the IP limit and count 1 each (a batch counts its orders) on the order limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from services.gateway.binance.params import BinanceError


@dataclass(frozen=True)
class RateLimits:
    weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200


BINANCE = RateLimits()

# (method, path) -> weight; a callable takes the request's parameters
WEIGHTS: dict[tuple[str, str], object] = {
    ("GET", "/fapi/v1/ping"): 1, ("GET", "/fapi/v1/time"): 1, ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/depth"): lambda q: {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10}.get(
        int(q.get("limit", 500) or 500), 20),
    ("GET", "/fapi/v1/trades"): 5, ("GET", "/fapi/v1/aggTrades"): 20,
    ("GET", "/fapi/v1/klines"): lambda q: _by_limit(q, 500), ("GET", "/fapi/v1/markPriceKlines"): lambda q:
    _by_limit(q, 500),
    ("GET", "/fapi/v1/ticker/24hr"): lambda q: 1 if q.get("symbol") else 40,
    ("GET", "/fapi/v1/ticker/price"): lambda q: 1 if q.get("symbol") else 2,
    ("GET", "/fapi/v1/ticker/bookTicker"): lambda q: 2 if q.get("symbol") else 5,
    ("GET", "/fapi/v1/premiumIndex"): 1, ("GET", "/fapi/v1/fundingRate"): 1, ("GET", "/fapi/v1/fundingInfo"): 1,
    ("GET", "/fapi/v2/account"): 5, ("GET", "/fapi/v3/account"): 5, ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5, ("GET", "/fapi/v2/positionRisk"): 5, ("GET", "/fapi/v3/positionRisk"): 5,
    ("POST", "/fapi/v1/marginType"): 1, ("POST", "/fapi/v1/leverage"): 1, ("POST", "/fapi/v1/positionMargin"): 1,
    ("GET", "/fapi/v1/leverageBracket"): 1, ("GET", "/fapi/v1/commissionRate"): 20,
    ("GET", "/fapi/v1/positionSide/dual"): 30, ("POST", "/fapi/v1/positionSide/dual"): 1,
    ("GET", "/fapi/v1/multiAssetsMargin"): 30, ("POST", "/fapi/v1/multiAssetsMargin"): 1,
    ("POST", "/fapi/v1/order"): 0, ("POST", "/fapi/v1/batchOrders"): 5, ("PUT", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/order"): 1, ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): lambda q: 1 if q.get("symbol") else 40, ("GET", "/fapi/v1/openOrder"): 1,
    ("DELETE", "/fapi/v1/allOpenOrders"): 1, ("GET", "/fapi/v1/allOrders"): 5, ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/forceOrders"): lambda q: 20 if q.get("symbol") else 50, ("GET", "/fapi/v1/income"): 30,
    ("POST", "/fapi/v1/listenKey"): 1, ("PUT", "/fapi/v1/listenKey"): 1, ("DELETE", "/fapi/v1/listenKey"): 1,
    ("POST", "/fapi/v1/algoOrder"): 0, ("GET", "/fapi/v1/algoOrder"): 1, ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/openAlgoOrders"): lambda q: 1 if q.get("symbol") else 40, ("GET", "/fapi/v1/allAlgoOrders"): 5,
    ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
}
ORDERS = {("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/batchOrders"), ("PUT", "/fapi/v1/order"),
          ("POST", "/fapi/v1/algoOrder")}


def _by_limit(query, default: int) -> int:
    limit = int(query.get("limit", default) or default)
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


@dataclass
class _Window:
    start: int = 0
    used: int = 0

    def add(self, now_s: float, length_s: int, amount: int) -> int:
        start = int(now_s // length_s) * length_s
        if start != self.start:
            self.start, self.used = start, 0
        self.used += amount
        return self.used


@dataclass
class Limiter:
    limits: RateLimits = field(default_factory=RateLimits)
    weights: dict[str, _Window] = field(default_factory=dict)  # IP -> this minute
    orders_10s: dict[str, _Window] = field(default_factory=dict)  # account -> these 10 seconds
    orders_1m: dict[str, _Window] = field(default_factory=dict)

    def weigh(self, request: web.Request, now_s: float | None = None) -> dict[str, str]:
        """Count the request's weight for its IP; the headers it answers with. Raises
        ``BinanceError`` (429, -1003) past the limit: the request is not served."""
        now_s = time.time() if now_s is None else now_s
        weight = WEIGHTS.get((request.method, request.path), 1)
        if callable(weight):
            try:
                weight = weight(request.query)
            except ValueError:
                weight = 1
        ip = request.remote or "?"
        used = self.weights.setdefault(ip, _Window()).add(now_s, 60, int(weight))
        if used > self.limits.weight_per_minute:
            raise BinanceError(-1003, f"Too many requests; current limit of IP({ip}) is "
                                      f"{self.limits.weight_per_minute} requests per minute. Please use the "
                                      "websocket for live updates to avoid polling the API.", status=429)
        return {"X-MBX-USED-WEIGHT-1M": str(used)}

    def count_orders(self, account: str, orders: int, now_s: float | None = None) -> dict[str, str]:
        """Count ``orders`` new orders of ``account``; the headers. Raises ``BinanceError``
        (429, -1015) past either order limit."""
        now_s = time.time() if now_s is None else now_s
        ten = self.orders_10s.setdefault(account, _Window()).add(now_s, 10, orders)
        minute = self.orders_1m.setdefault(account, _Window()).add(now_s, 60, orders)
        headers = {"X-MBX-ORDER-COUNT-10S": str(ten), "X-MBX-ORDER-COUNT-1M": str(minute)}
        if ten > self.limits.orders_per_10s:
            raise BinanceError(-1015, f"Too many new orders; current limit is {self.limits.orders_per_10s} "
                                      "orders per 10 SECONDS.", status=429)
        if minute > self.limits.orders_per_minute:
            raise BinanceError(-1015, f"Too many new orders; current limit is {self.limits.orders_per_minute} "
                                      "orders per MINUTE.", status=429)
        return headers
