"""Trend following on the mark: long above a slow average, short below, one unit at a time.

    perpsim run --strategy examples/strategies/trend.py:TrendFollower --scenario trending
"""

from schemas import MarginMode
from services.sim.strategy import Strategy


class TrendFollower(Strategy):
    markets = ["SOL-PERP"]
    deposit = "20000"
    size = "5"

    def __init__(self) -> None:
        self.average = None

    async def on_start(self, ctx) -> None:
        await ctx.set_margin_mode("SOL-PERP", MarginMode.ISOLATED)
        await ctx.set_leverage("SOL-PERP", 5)

    async def on_mark(self, ctx, market, mark, index) -> None:
        price = float(mark)
        self.average = price if self.average is None else self.average + 0.05 * (price - self.average)
        position = float(ctx.position(market))
        if price > self.average * 1.002 and position <= 0:
            await ctx.buy(market, self.size if position == 0 else str(abs(position) + float(self.size)))
        elif price < self.average * 0.998 and position >= 0:
            await ctx.sell(market, self.size if position == 0 else str(position + float(self.size)))
