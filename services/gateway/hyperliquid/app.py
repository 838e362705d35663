"""The Hyperliquid dialect's web application: ``/info``, ``/exchange`` and ``/ws`` over a
running gateway's projection, ledger and client (docs/gateway.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.hyperliquid.exchange import HyperliquidExchange
from services.gateway.hyperliquid.info import HyperliquidInfo
from services.gateway.hyperliquid.streams import HyperliquidStreams


def application(gateway: Any) -> web.Application:
    """Hyperliquid's dialect over a running gateway's projection and ledger (``gateway``
    has ``markets``, ``projection`` and ``ledger``), on a port of its own: its paths
    (``/info``, ``/exchange``, ``/ws``) are not Binance's."""
    app = web.Application()
    info = HyperliquidInfo(gateway)
    exchange = HyperliquidExchange(gateway)
    streams = HyperliquidStreams(gateway, info, exchange)
    gateway.taps.append(streams)
    app.add_routes(info.routes() + exchange.routes() + streams.routes())

    async def disarm(_app) -> None:  # scheduled cancels and streams do not outlive the server
        for task in exchange.scheduled.values():
            task.cancel()
        gateway.taps.remove(streams)
        await streams.close()

    app.on_cleanup.append(disarm)
    return app
