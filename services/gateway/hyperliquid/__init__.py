"""Hyperliquid's API dialect (its official SDK, ccxt's ``hyperliquid``, Freqtrade) over a
gateway host (docs/gateway.md). ``Hyperliquid`` is the dialect the registry lists; it
imports its parts (signing pulls in eth-account) only when it builds its application.

- ``app.py``: the application; ``info.py``: ``POST /info``; ``exchange.py``: the signed
  actions of ``POST /exchange``; ``streams.py``: the WebSocket (``/ws``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from services.gateway.host import GatewayHost


class Hyperliquid:
    """The dialect (``services.gateway.host.Dialect``), on a port of its own: its paths are
    not Binance's."""

    name = "hyperliquid"
    title = "Hyperliquid"
    port_option = "--hyperliquid-port"
    default_port = 8081
    paths = "/info, /exchange, /ws"

    def application(self, host: GatewayHost) -> web.Application:
        from services.gateway.hyperliquid.app import application

        return application(host)
