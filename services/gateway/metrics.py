"""Prometheus metrics of the venue, on the gateway's Binance port: ``GET /metrics``.

Counted from the account events the gateway's client reads (every account's): orders
accepted, fills, refusals by reason, liquidation steps by margin mode and stage. Read at
each scrape from the gateway's projection and ledger: the insurance fund, open interest
and mark per market. And, every ``LAG_EVERY_S``, each service's lag (records of its input
topic not yet committed by its consumer group) and processing rate (records committed per
second). Exposed with prometheus-client, in its text format (docs/services.md, "Metrics").
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from schemas.enums import Condition
from schemas.events import Fill, LiquidationOutcome, OrderAccepted, OrderRejected
from services.gateway.host import GatewayHost
from services.runtime.bus import BusError
from services.runtime.lag import input_lag

log = logging.getLogger(__name__)
LAG_EVERY_S = 5.0


class VenueMetrics:
    """The venue's metrics over a running ``Gateway``."""

    def __init__(self, host: GatewayHost):
        self.host = host
        self.registry = CollectorRegistry()
        self.orders = Counter("perpsim_orders", "Orders accepted (conditional ones when placed)",
                              ["market", "conditional"], registry=self.registry)
        self.fills = Counter("perpsim_fills", "Fills, by how they came about", ["market", "liquidity"],
                             registry=self.registry)
        self.rejects = Counter("perpsim_rejects", "Orders refused, by reason", ["reason"], registry=self.registry)
        self.liquidations = Counter("perpsim_liquidations", "Liquidation steps, by margin mode and stage",
                                    ["mode", "stage"], registry=self.registry)
        self.registry.register(_Live(self))
        self.lag: dict[str, int] = {}
        self.rate: dict[str, float] = {}
        self._committed: dict[str, tuple[float, int]] = {}
        self._watcher: asyncio.Task | None = None
        host.client.listen(self._event)

    def _event(self, message: Any) -> None:
        if isinstance(message, OrderAccepted):
            self.orders.labels(message.market, str(message.condition is not Condition.NONE).lower()).inc()
        elif isinstance(message, Fill):
            self.fills.labels(message.market, message.liquidity.name.lower()).inc()
        elif isinstance(message, OrderRejected):
            self.rejects.labels(message.reason.name).inc()
        elif isinstance(message, LiquidationOutcome):
            self.liquidations.labels(message.mode.name.lower(), message.stage.name.lower()).inc()

    # --------------------------------------------------------------- the lag

    async def start(self, _app=None) -> None:
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self, _app=None) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass

    async def _watch(self) -> None:
        while True:
            try:
                await self.measure()
            except BusError as exc:  # the broker is away: the next round tries again
                log.warning("metrics: cannot read the services' offsets: %s", exc)
            await asyncio.sleep(LAG_EVERY_S)

    async def measure(self) -> None:
        now = time.monotonic()
        for service, (committed, behind) in (await input_lag(self.host.bus)).items():
            self.lag[service] = behind
            then = self._committed.get(service)
            if then is not None and now > then[0]:
                self.rate[service] = max(0, committed - then[1]) / (now - then[0])
            self._committed[service] = (now, committed)

    # ------------------------------------------------------------------ HTTP

    def routes(self) -> list:
        return [web.get("/metrics", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


class _Live:
    """The gauges read at each scrape."""

    def __init__(self, metrics: VenueMetrics):
        self.metrics = metrics

    def collect(self):
        host = self.metrics.host
        fund = GaugeMetricFamily("perpsim_insurance_fund_usdc", "The insurance fund's balance")
        state = host.ledger.accounts.get("insurance")
        fund.add_metric([], state.snapshot.balance / 1e6 if state is not None and state.snapshot else 0.0)
        yield fund
        interest: dict[str, int] = {symbol: 0 for symbol in host.markets}
        for account in host.ledger.accounts.values():
            for position in account.snapshot.positions if account.snapshot is not None else ():
                if position.signed_size > 0 and position.market in interest:
                    interest[position.market] += position.signed_size
        open_interest = GaugeMetricFamily("perpsim_open_interest", "Open interest (longs), in the base asset",
                                          labels=["market"])
        marks = GaugeMetricFamily("perpsim_mark_price", "Mark price", labels=["market"])
        for symbol, spec in host.markets.items():
            open_interest.add_metric([symbol], float(spec.format_size(interest[symbol])))
            mark = host.projection.markets[symbol].mark
            if mark:
                marks.add_metric([symbol], float(spec.format_price(mark)))
        yield open_interest
        yield marks
        lag = GaugeMetricFamily("perpsim_service_lag_records",
                                "Records of a service's input not yet committed by it", labels=["service"])
        rate = GaugeMetricFamily("perpsim_service_processed_per_second",
                                 "Records of its input a service committed per second", labels=["service"])
        for service, value in sorted(self.metrics.lag.items()):
            lag.add_metric([service], value)
        for service, value in sorted(self.metrics.rate.items()):
            rate.add_metric([service], value)
        yield lag
        yield rate
