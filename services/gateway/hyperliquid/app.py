"""The Hyperliquid dialect's application: ``/info``, ``/exchange`` and ``/ws`` over a gateway
host's projection, ledger and client (docs/gateway.md)."""

from __future__ import annotations

from aiohttp import web

from services.gateway.host import GatewayHost
from services.gateway.hyperliquid.exchange import HyperliquidExchange
from services.gateway.hyperliquid.info import HyperliquidInfo
from services.gateway.hyperliquid.streams import HyperliquidStreams


def application(host: GatewayHost) -> web.Application:
    """Hyperliquid's application over ``host``."""
    app = web.Application()
    info = HyperliquidInfo(host)
    exchange = HyperliquidExchange(host)
    streams = HyperliquidStreams(host, info, exchange)
    host.taps.append(streams)
    app.add_routes(info.routes() + exchange.routes() + streams.routes())

    async def disarm(_app) -> None:  # scheduled cancels and streams do not outlive the server
        for task in exchange.scheduled.values():
            task.cancel()
        if streams in host.taps:
            host.taps.remove(streams)
        await streams.close()

    app.on_cleanup.append(disarm)
    return app
