"""Scripted market scenarios on the in-process core (risk, matching, liquidation, oracle).

- ``isolated_case`` and ``cross_case``: the two cases of MARGIN.md, through a SOL crash.
- ``crash``: a liquidation cascade: leveraged accounts in both modes, a market maker, and
  a shock; reports who was liquidated, at what price, and the insurance fund.

Each returns a ``ScenarioResult`` with the numbers a user checks and a narrative; the CLI
prints it and the tests assert on it. Deterministic: the same arguments give the same run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from exchange.core import CoreExchange, money
from exchange.invariants import check
from exchange.markets import MICRO, Market
from exchange.oracle import (
    SECOND,
    Flat,
    IndexSource,
    Oracle,
    RandomWalk,
    Shock,
    Shocked,
)
from exchange.venues import DEFAULT_VENUE, Venue
from exchange.venues import venue as venue_profile
from schemas.enums import LiquidationStage, Liquidity, MarginMode, Side, TimeInForce
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    CancelOrder,
    Fill,
    LiquidationOutcome,
    LiquidationTrigger,
    MarkPrice,
)


class MarketMaker:
    """Quotes a ladder around the mark on every tick, replacing its previous quotes."""

    def __init__(self, ex: CoreExchange, account: str, market: str, levels: int = 8,
                 spacing_ppm: int = 2_000, lots: int = 2_000):
        self.ex, self.account, self.market = ex, account, market
        self.levels, self.spacing_ppm, self.lots = levels, spacing_ppm, lots

    def requote(self) -> None:
        ex, spec = self.ex, self.ex.markets[self.market]
        mark = ex.risk.marks.marks.get(self.market)
        if not mark:
            return
        account = ex.risk.accounts[self.account]
        for order_id in [o.order_id for o in account.orders.values() if o.market == self.market]:
            stamp = ex.stamp()
            ex.submit(CancelOrder(*stamp, self.account, self.market, order_id, ex.ts))
        for level in range(1, self.levels + 1):
            offset = max(1, mark * self.spacing_ppm * level // 1_000_000)
            for side, price in ((Side.BUY, mark - offset), (Side.SELL, mark + offset)):
                if price > 0:
                    ex.place(self.account, self.market, side, spec.format_size(self.lots),
                             spec.format_price(price))


@dataclass
class ScenarioResult:
    name: str
    lines: list[str] = field(default_factory=list)
    liquidation_price: str = ""
    liquidated_at: str = ""
    deposit: int = 0
    final_balance: int = 0
    insurance_fund: int = 0
    liquidations: list[tuple[str, str, str, str]] = field(default_factory=list)  # account, bucket, mode, stage
    opened: dict[str, int] = field(default_factory=dict)  # balance of each trader right after opening
    table: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # per liquidated bucket
    exchange: CoreExchange | None = None

    @property
    def loss(self) -> int:
        return self.deposit - self.final_balance


def _usd(amount: int) -> str:
    return f"{amount / MICRO:,.2f}"


def _run(ex: CoreExchange, makers: list[MarketMaker], seconds: float, result: ScenarioResult,
         watch: str | None = None, step_ms: int = 250) -> None:
    """Advance the clock in oracle ticks of ``step_ms``, requoting, and narrate."""
    steps = int(seconds * 1000) // step_ms
    for step in range(steps + 1):
        ts = step * step_ms * 1_000_000
        when = f"t={ts / SECOND:6.2f}s"
        events = ex.advance(ts)
        for maker in makers:
            maker.requote()
        for event in events:
            if isinstance(event, LiquidationTrigger) and not event.update:
                marks = ", ".join(f"{p.market} {ex.markets[p.market].format_price(p.mark_price)}"
                                  for p in event.positions)
                bucket = event.market or "cross"
                result.lines.append(f"{when}  {event.account}: {bucket} bucket below maintenance "
                                    f"(equity {_usd(event.equity)} < MM {_usd(event.maintenance_margin)}) at {marks}")
                if event.account == watch and not result.liquidated_at:
                    result.liquidated_at = marks
                result.table.append((f"{ts / SECOND:.2f}s", event.account, event.mode.name.lower(), marks, ""))
            elif isinstance(event, LiquidationOutcome) and event.stage is not LiquidationStage.TRIGGERED:
                result.liquidations.append((event.account, event.market or "cross", event.mode.name,
                                            event.stage.name))
                for row, entry in enumerate(result.table):
                    if entry[1] == event.account and not entry[4]:
                        result.table[row] = entry[:4] + (event.stage.name.lower(),)
                        break
                if watch in (None, event.account):
                    result.lines.append(f"{when}  {event.account}: liquidation {event.stage.name.lower()}")
            elif isinstance(event, Fill) and watch in (event.taker_account, event.maker_account):
                mine = event.taker_order_id if event.taker_account == watch else event.maker_order_id
                if event.liquidity is not Liquidity.BOOK or mine & LIQUIDATION_ORDER_BIT:
                    spec = ex.markets[event.market]
                    how = "liquidation" if event.liquidity is Liquidity.BOOK else event.liquidity.name.lower()
                    result.lines.append(f"{when}  {watch}: {how} fill {spec.format_size(event.size)} "
                                        f"{event.market} @ {spec.format_price(event.price)}")
        check(ex.risk, ex.matching.values())


def _setup(markets: dict[str, Market], sources: dict[str, IndexSource], fund: str = "1000000",
           profile: Venue | None = None) -> CoreExchange:
    ex = CoreExchange(markets, oracle=Oracle(markets, sources, funding=profile.funding if profile else None,
                                             mark_rule=profile.mark if profile else None),
                      venue=profile)
    ex.deposit("insurance", fund)
    ex.deposit("maker", "100000000")
    ex.advance(0)
    return ex


SOL_CRASH = "-30% over 10s at 10s"


def isolated_case(shock: str = SOL_CRASH, venue: str = DEFAULT_VENUE) -> ScenarioResult:
    """2,000 deposited; SOL long with 300 of isolated margin at 5x; SOL crashes."""
    result = ScenarioResult("isolated")
    profile = venue_profile(venue)
    markets = profile.markets()
    ex = _setup(markets, {"SOL-PERP": Shocked(Flat(150.0), [Shock.parse(shock)])}, profile=profile)
    maker = MarketMaker(ex, "maker", "SOL-PERP")
    maker.requote()
    ex.deposit("trader", "2000")
    ex.set_mode("trader", "SOL-PERP", MarginMode.ISOLATED)
    ex.set_leverage("trader", "SOL-PERP", 5)
    ex.place("maker", "SOL-PERP", Side.SELL, "10", "150")
    ex.place("trader", "SOL-PERP", Side.BUY, "10", "150", tif=TimeInForce.IOC)
    return _report(ex, [maker], result, "SOL-PERP", shock)


def cross_case(shock: str = SOL_CRASH, venue: str = DEFAULT_VENUE) -> ScenarioResult:
    """2,000 deposited; three cross positions (SOL long 100, ETH long 0.5, BTC short 0.02);
    SOL crashes."""
    result = ScenarioResult("cross")
    profile = venue_profile(venue)
    markets = profile.markets()
    sources = {"SOL-PERP": Shocked(Flat(150.0), [Shock.parse(shock)]),
               "ETH-PERP": Flat(3000.0), "BTC-PERP": Flat(60000.0)}
    ex = _setup(markets, sources, profile=profile)
    makers = [MarketMaker(ex, "maker", symbol) for symbol in sources]
    for maker in makers:
        maker.requote()
    ex.deposit("trader", "2000")
    for symbol, side, size, price in (("SOL-PERP", Side.BUY, "100", "150"), ("ETH-PERP", Side.BUY, "0.5", "3000"),
                                      ("BTC-PERP", Side.SELL, "0.02", "60000")):
        ex.set_leverage("trader", symbol, 10)
        ex.place("maker", symbol, side.opposite, size, price)
        ex.place("trader", symbol, side, size, price, tif=TimeInForce.IOC)
    return _report(ex, makers, result, "SOL-PERP", shock)


def _report(ex: CoreExchange, makers: list[MarketMaker], result: ScenarioResult, market: str,
            shock: str) -> ScenarioResult:
    spec = ex.markets[market]
    snapshot = ex.snapshot("trader")
    position = next(p for p in snapshot.positions if p.market == market)
    result.deposit = money("2000")
    result.liquidation_price = spec.format_price(position.liquidation_price) if position.liquidation_price else "none"
    mode = position.mode.name.lower()
    result.lines.append(f"trader: deposited 2,000.00; {mode} {market} {spec.format_size(position.signed_size)} "
                        f"@ entry {spec.format_price(round(position.entry_value / (abs(position.signed_size) * spec.value_per_tick_lot)))}"
                        + (f" with {_usd(position.isolated_margin)} of isolated margin" if position.isolated_margin else "")
                        + f"; {len(snapshot.positions)} position(s); balance {_usd(snapshot.balance)}")
    result.lines.append(f"trader: liquidation price {result.liquidation_price}, "
                        f"bankruptcy price {spec.format_price(position.bankruptcy_price)}; shock: {market} {shock}")
    _run(ex, makers, 40, result, watch="trader")
    final = ex.snapshot("trader")
    result.final_balance = final.balance
    result.insurance_fund = ex.risk.fund_balance()
    result.exchange = ex
    result.lines.append(f"trader: final balance {_usd(final.balance)}, loss {_usd(result.loss)}, "
                        f"open positions {len(final.positions)}; insurance fund {_usd(result.insurance_fund)}")
    return result


def crash(accounts: int = 300, seed: int = 11, shock: str = "-25% over 20s at 10s", seconds: int = 60,
          venue: str = DEFAULT_VENUE) -> ScenarioResult:
    """A cascade: ``accounts`` leveraged SOL traders (half isolated, half cross, 3x to 20x,
    long and short) against a market maker, then a crash."""
    result = ScenarioResult("crash")
    rng = random.Random(seed)
    profile = venue_profile(venue)
    markets = profile.markets()
    ex = _setup(markets, {"SOL-PERP": Shocked(RandomWalk(150.0, volatility=0.6, seed=seed, jumps_per_day=0),
                                                [Shock.parse(shock)])}, fund="20000", profile=profile)
    maker = MarketMaker(ex, "maker", "SOL-PERP", levels=10, spacing_ppm=1_500, lots=3_000)
    maker.requote()
    for index in range(accounts):
        account = f"t{index:03d}"
        ex.deposit(account, str(rng.randint(500, 5000)))
        if index % 2:
            ex.set_mode(account, "SOL-PERP", MarginMode.ISOLATED)
        ex.set_leverage(account, "SOL-PERP", rng.randint(3, 20))
        side = Side.BUY if rng.random() < 0.7 else Side.SELL
        ex.place(account, "SOL-PERP", side, f"{rng.randint(5, 60)}", tif=TimeInForce.IOC)
        maker.requote()
    result.opened = {f"t{index:03d}": ex.risk.accounts[f"t{index:03d}"].balance for index in range(accounts)}
    result.lines.append(f"{accounts} leveraged SOL accounts (odd isolated, even cross), insurance fund "
                        f"{_usd(ex.risk.fund_balance())}; shock: SOL {shock}")
    _run(ex, [maker], seconds, result)
    result.insurance_fund = ex.risk.fund_balance()
    result.exchange = ex
    marks = [e.mark_price for e in ex.log if isinstance(e, MarkPrice) and e.market == "SOL-PERP"]
    spec = markets["SOL-PERP"]
    result.lines.append(f"SOL from {spec.format_price(marks[0])} to {spec.format_price(min(marks))} (low); "
                        f"{len(result.liquidations)} buckets liquidated "
                        f"({sum(1 for l in result.liquidations if l[2] == 'ISOLATED')} isolated, "
                        f"{sum(1 for l in result.liquidations if l[2] == 'CROSS')} cross); "
                        f"bad debt {_usd(ex.risk.bad_debt)}; insurance fund {_usd(result.insurance_fund)}")
    stages: dict[str, int] = {}
    for event in ex.log:
        if isinstance(event, LiquidationOutcome) and event.stage is not LiquidationStage.TRIGGERED:
            stages[event.stage.name.lower()] = stages.get(event.stage.name.lower(), 0) + 1
    adl = [e for e in ex.log if isinstance(e, Fill) and e.liquidity is Liquidity.ADL]
    result.lines.append("outcomes: " + (", ".join(f"{stage} {count}" for stage, count in sorted(stages.items()))
                                        or "none")
                        + (f"; ADL closed positions of {len({f.taker_account for f in adl})} profitable "
                           f"account(s) in {len(adl)} fill(s) against {', '.join(sorted({f.maker_account for f in adl}))}"
                           if adl else "; no ADL"))
    return result
