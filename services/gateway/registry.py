"""The API dialects the gateway serves, in one table: launch and the command line loop over
it (one port option per dialect). The first one's port also serves the host's own pages
(the web view, metrics). Adding a dialect is its folder under ``services/gateway/`` and one
line here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from services.gateway.binance import Binance
from services.gateway.hyperliquid import Hyperliquid

if TYPE_CHECKING:
    from aiohttp import web

    from services.gateway.host import Dialect, GatewayHost

log = logging.getLogger(__name__)

DIALECTS: tuple[Dialect, ...] = (
    Binance(),
    Hyperliquid(),
)


@contextlib.asynccontextmanager
async def serving(host: GatewayHost, address: str, ports: dict[str, int],
                  dialects: tuple[Dialect, ...] | None = None) -> AsyncIterator[dict[str, int]]:
    """Serve each dialect (the registry's by default) on ``address`` at its port in ``ports``
    (by dialect name; 0 or missing: a free one), the host's pages on the first's; yields
    the ports listened on. ``OSError`` if a port cannot be had."""
    from aiohttp import web

    chosen = DIALECTS if dialects is None else dialects
    runners: list[web.AppRunner] = []
    listening: dict[str, int] = {}
    try:
        for index, dialect in enumerate(chosen):
            app = dialect.application(host)
            if index == 0:
                _add_pages(host, app)
            runner = web.AppRunner(app, access_log=None)
            runners.append(runner)
            await runner.setup()
            site = web.TCPSite(runner, address, ports.get(dialect.name, 0))
            await site.start()
            listening[dialect.name] = runner.addresses[0][1]
            log.info("service=gateway listening on http://%s:%d (%s)", address, listening[dialect.name],
                     dialect.title)
        yield listening
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def _add_pages(host: GatewayHost, app: web.Application) -> None:
    """The host's own pages on ``app``: the web view on ``/`` and metrics on ``/metrics``."""
    from services.gateway.metrics import VenueMetrics
    from services.gateway.web.app import WebView

    view = WebView(host)
    metrics = VenueMetrics(host)
    app.add_routes(view.routes() + metrics.routes())

    async def close_view(_app) -> None:
        await view.close()

    app.on_startup.append(metrics.start)
    app.on_cleanup.append(metrics.stop)
    app.on_cleanup.append(close_view)
