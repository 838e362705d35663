"""The Binance USD-M futures ("fapi") dialect, so that unmodified ccxt bots trade on
perpsim: its REST routes, WebSocket streams, wire formats, errors, rate limits and signing
(docs/gateway.md). ``Binance`` is the dialect the registry lists; it imports its parts only
when it builds its application, so that naming it costs a process nothing.

- ``app.py``: the application, its middlewares (errors, rate limits) and its tap on the
  host's events (user data streams, margin calls);
- ``context.py``: what the handlers share (signing, symbols, command answers);
- ``public.py``, ``trading.py``, ``algo.py``: the market data, account and order, and algo
  order endpoints; ``streams.py``: the WebSocket streams; ``wire.py``: the JSON bodies;
  ``params.py``, ``limits.py``: parameters and errors, rate limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from services.gateway.binance.limits import RateLimits
    from services.gateway.host import GatewayHost


class Binance:
    """The dialect (``services.gateway.host.Dialect``); ``limits``: the request-weight and
    order-rate limits it enforces when the run has rate limits on (None: Binance's
    published ones)."""

    name = "binance"
    title = "Binance USD-M"
    port_option = "--gateway-port"  # its spelling from before there were other dialects
    default_port = 8080
    paths = "/fapi/..., /ws, /stream"

    def __init__(self, limits: RateLimits | None = None):
        self.limits = limits

    def application(self, host: GatewayHost) -> web.Application:
        from services.gateway.binance.app import BinanceApi
        from services.gateway.binance.limits import BINANCE

        limits = (self.limits or BINANCE) if host.settings.rate_limits else None
        return BinanceApi(host, limits).application()
