"""The gateway's dialect-free host: what every API dialect serves from, and the contract a
dialect implements to be served (docs/gateway.md, "The gateway's shape").

``GatewayHost`` folds the bus into one projection of market data (``projection``, from
``market.data``) and one of accounts (``ledger``, from ``account.events`` through the
native ``client``), holds the API keys (``keys``), and hands each event to the taps — the
dialects' streams and the web view — that asked for it. It knows no dialect. The registry
(``services.gateway.registry``) serves each dialect over it, and the host's own pages (the
web view on ``/``, Prometheus metrics on ``/metrics``) on the first dialect's port.

A dialect (``Dialect``) is one folder under ``services/gateway/`` that builds an aiohttp
application over a host; its words, ids, thresholds, errors and JSON bodies live there
and nowhere else. Adding one is its folder plus one line in the registry.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from exchange.markets import Market
from schemas import MARKET_DATA
from schemas.events import BookSnapshot
from services.client import Client
from services.gateway.keys import KeyStore
from services.gateway.ledger import Ledger, UserEvent
from services.gateway.projection import MarketProjection
from services.runtime.bus import Bus, TolerantReader

log = logging.getLogger(__name__)

# a book's levels (price ticks -> size lots) on each side, as the projection keeps them
BookLevels = tuple[dict[int, int], dict[int, int]]


class Tap(Protocol):
    """A receiver of the host's events: a dialect's streams, the web view."""

    def market(self, message: object, before: BookLevels | None) -> None:
        """A ``market.data`` message, once the projection has applied it; ``before``: for a
        ``BookSnapshot``, the book's levels before it (None otherwise)."""

    def user(self, account: str, event: UserEvent) -> None:
        """A ledger event of ``account`` (only sent while ``listening(account)``)."""

    def listening(self, account: str) -> bool:
        """Whether this tap streams ``account``'s events now."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What a run chooses for every dialect: how long a command may wait for its answer,
    whether the venues' published rate limits are enforced, and when the venue is too
    busy to take new orders."""

    order_timeout_s: float = 10.0
    rate_limits: bool = True
    # overload: new orders are refused (as the venues refuse them) while the oldest command
    # has waited this long for its answer, or this many wait (docs/gateway.md, "Overload")
    overload_wait_s: float = 3.0
    overload_commands: int = 2000


class Dialect(Protocol):
    """One API dialect: its name, where it listens by default, and its application over a
    host. ``port_option`` is its command-line option (``--<name>-port`` unless a dialect
    kept an older spelling)."""

    name: str
    title: str  # as a person names the venue's API ("Binance USD-M")
    port_option: str
    default_port: int
    paths: str  # what it serves, for --help ("/fapi/..., /ws")

    def application(self, host: GatewayHost) -> web.Application: ...


class GatewayHost:
    """The projection, ledger, client and keys every dialect reads and trades through."""

    def __init__(self, bus: Bus, markets: dict[str, Market], keys: KeyStore | None = None,
                 settings: GatewaySettings = GatewaySettings()):
        self.bus = bus
        self.markets = markets
        self.keys = keys
        self.settings = settings
        self.order_timeout_s = settings.order_timeout_s
        self.projection = MarketProjection({symbol: m.value_per_tick_lot for symbol, m in markets.items()})
        self.client = Client(bus, markets, producer=f"gateway-{uuid.uuid4().hex[:8]}", keep=10_000)
        self.taps: list[Tap] = []
        self.ledger = Ledger(markets, notify=self._notify, listening=self.listening,
                             marks=lambda: {symbol: state.mark for symbol, state in self.projection.markets.items()})
        self.market_data = TolerantReader(MARKET_DATA, "gateway")
        self._reader: asyncio.Task | None = None

    def overloaded(self) -> str:
        """Why new work should be refused now ("" if it should not): the venue already has
        more than it answers in time. Each dialect answers so in its venue's words."""
        count, oldest_s = self.client.waiting()
        if oldest_s >= self.settings.overload_wait_s:
            return f"{count} commands wait for the exchange, the oldest for {oldest_s:.1f} s"
        if count >= self.settings.overload_commands:
            return f"{count} commands wait for the exchange"
        return ""

    def listening(self, account: str) -> bool:
        """Whether any tap streams ``account`` (the ledger builds its events only then)."""
        return any(tap.listening(account) for tap in self.taps)

    def _notify(self, account: str, event: UserEvent) -> None:
        for tap in self.taps:
            if tap.listening(account):
                try:
                    tap.user(account, event)
                except Exception:  # noqa: BLE001 - a stream bug must not stop the ledger
                    log.exception("gateway could not stream a user event")

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_market_data())
        self.client.listen(self.ledger.apply)
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass

    async def _read_market_data(self) -> None:
        consumer = self.bus.consumer(MARKET_DATA, f"perpsim-gateway-{id(self)}")
        try:
            while True:
                for record in await consumer.getmany(timeout_ms=50):
                    for message in self.market_data.messages(record):
                        before = None
                        if isinstance(message, BookSnapshot) and message.market in self.projection.markets:
                            state = self.projection.markets[message.market]
                            before = (state.bids, state.asks)
                        self.projection.apply(message)
                        for tap in list(self.taps):
                            try:
                                tap.market(message, before)
                            except Exception:  # noqa: BLE001 - a stream bug must not stop the projection
                                log.exception("gateway could not stream %s", type(message).__name__)
        finally:
            await consumer.stop()
