"""The live dashboard of `perpsim up`: one screen, refreshed every second (rich).

Orders/s, fills/s, submit→acceptance latency percentiles, marks and open interest per
market, liquidations by margin mode and how they ended, and the insurance fund. When the
output is not a terminal it prints one plain line every 5 seconds instead.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

DASHBOARD_WIDTH = 96


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


class Dashboard:
    def __init__(self, market, duration_s: float, live: bool = True, web_url: str = ""):
        self.market = market
        self.web_url = web_url
        self.duration_s = duration_s
        self.console = Console(stderr=True)
        self.live = live and sys.stderr.isatty()
        self._live: Live | None = None
        self._last = (time.monotonic(), 0, 0)
        self._last_line = 0.0

    def __enter__(self) -> Dashboard:
        if self.live:
            self._live = Live(self._render(0, 0), console=self.console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, market) -> None:
        stats = market.stats
        now = time.monotonic()
        then, orders, fills = self._last
        elapsed = max(1e-6, now - then)
        orders_rate, fills_rate = (stats.orders - orders) / elapsed, (stats.fills - fills) / elapsed
        self._last = (now, stats.orders, stats.fills)
        if self._live is not None:
            self._live.update(self._render(orders_rate, fills_rate))
        elif now - self._last_line >= 5:
            self._last_line = now
            recent = stats.latencies[-2000:]
            marks = ", ".join(f"{m} {market.markets[m].format_price(p)}" for m, p in sorted(market.view.marks.items())
                              if m in market.scenario.oracle)
            modes = [mode for _, _, mode, _, _ in stats.liquidations]
            interest = ", ".join(f"{m} {market.markets[m].format_size(self._open_interest(m))}"
                                 for m in sorted(market.scenario.oracle))
            fund = market.view.snapshots.get("insurance")
            print(f"t={now - stats.started:5.0f}s orders/s={orders_rate:6.0f} fills/s={fills_rate:6.0f} "
                  f"latency p50={_percentile(recent, .5) * 1e3:.1f}ms p99={_percentile(recent, .99) * 1e3:.1f}ms "
                  f"marks[{marks}] open_interest[{interest}] "
                  f"liquidations isolated={modes.count('ISOLATED')} cross={modes.count('CROSS')} "
                  f"stops_fired={stats.stops_fired} fund={(fund.balance if fund else 0) / 1e6:,.2f}",
                  file=sys.stderr, flush=True)

    def _open_interest(self, symbol: str) -> int:
        return sum(v for (_, m), v in self.market.view.fills.items() if m == symbol and v > 0)

    def _render(self, orders_rate: float, fills_rate: float) -> Table:
        market, stats = self.market, self.market.stats
        elapsed = time.monotonic() - stats.started
        table = Table(title=f"perpsim — {market.scenario.name} (seed {market.seed}) — "
                            f"{elapsed:.0f} / {self.duration_s:.0f} s", width=min(DASHBOARD_WIDTH, self.console.width))
        table.add_column("metric", width=32, no_wrap=True)  # fixed widths: the table does not jump as values grow
        table.add_column("value", justify="right")
        recent = stats.latencies[-2000:]
        table.add_row("orders / s", f"{orders_rate:,.0f}")
        table.add_row("fills / s", f"{fills_rate:,.0f}")
        table.add_row("latency p50 / p90 / p99", " / ".join(f"{_percentile(recent, f) * 1e3:.1f} ms" for f in (.5, .9, .99)))
        for symbol in sorted(market.scenario.oracle):
            spec = market.markets[symbol]
            open_interest = self._open_interest(symbol)
            mark, index = market.view.mark(symbol), market.view.index(symbol)
            table.add_row(f"{symbol} mark (index)", f"{spec.format_price(mark)} ({spec.format_price(index)})"
                          if mark else "waiting for the oracle's first mark")
            table.add_row(f"{symbol} open interest", spec.format_size(open_interest))
            rate, payments = market.view.funding.get(symbol, (0, 0))
            table.add_row(f"{symbol} funding", f"{rate / 1e7:.4f}% ({payments} paid)" if payments else "none yet")
        modes = [mode for _, _, mode, _, _ in stats.liquidations]
        table.add_row("liquidations isolated / cross", f"{modes.count('ISOLATED')} / {modes.count('CROSS')}")
        table.add_row("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items())) or "-")
        table.add_row("stops fired", f"{stats.stops_fired:,}")
        fund = market.view.snapshots.get("insurance")
        table.add_row("insurance fund", f"{(fund.balance if fund else 0) / 1e6:,.2f}")
        table.add_row("orders / fills / refused", f"{stats.orders:,} / {stats.fills:,} / {stats.rejected:,}")
        table.add_row("services behind (records)", " · ".join(f"{name} {behind:,}" for name, behind in
                                                              sorted(stats.lag.items())) or "-")
        if stats.held_ticks:
            table.add_row("participants waited", f"{stats.held_ticks:,} ticks (the venue lagged)")
        if self.web_url:
            table.add_row("web view", self.web_url)
        return table
