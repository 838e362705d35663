"""A small market-making grid: rests bids and offers around the mark, re-centres when the
mark has moved, and stops quoting the side that would grow too large a position.

    perpsim run --strategy examples/strategies/grid.py:GridMaker --scenario calm
"""

from services.sim.strategy import Strategy


class GridMaker(Strategy):
    markets = ["SOL-PERP"]
    deposit = "50000"
    levels = 3
    step = 0.002  # 0.2% between levels
    size = "2"
    max_position = 20.0

    def __init__(self) -> None:
        self.centre = None

    async def on_mark(self, ctx, market, mark, index) -> None:
        price = float(mark)
        if self.centre is not None and abs(price - self.centre) / self.centre < self.step:
            return
        self.centre = price
        for order_id in ctx.open_orders(market):
            await ctx.cancel(market, order_id)
        position = float(ctx.position(market))
        for level in range(1, self.levels + 1):
            if position < self.max_position:
                await ctx.buy(market, self.size, f"{price * (1 - self.step * level):.2f}")
            if position > -self.max_position:
                await ctx.sell(market, self.size, f"{price * (1 + self.step * level):.2f}")
