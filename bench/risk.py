"""Liquidation detection: indexed mark updates against a naive full scan, in the same run.

Builds a risk engine with N accounts (default 100,000), each with a position in one of
three markets (half isolated, half cross, leverage 2x to 20x) plus a share of cross
accounts holding all three markets, all opened through the engine's real fill path. Then
applies M mark updates (default 1,000): each market random-walks, and SOL trends down so
that liquidations come in waves. A triggered bucket is then settled as the liquidation
engine's backstop would (not timed), so that it leaves liquidation.

For every update it times ``RiskEngine.apply(MarkPrice)``, which reads only the index
entries the new mark crossed, and counts the accounts it had to check (near liquidation:
a crossed liquidation price or an exhausted movement budget) and how many it liquidated. On a
sample of the updates it also times the naive way: value every account holding the
market at the new mark and compare equity with MM. It prints the indexed time per update
grouped by how many accounts it checked, the naive time, and last the ratio
naive / indexed (how many times faster the index is).

    python -m bench.risk [--accounts 100000] [--updates 1000] [--multi 0.01] [--seed 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from exchange.accounts import cross_totals, isolated_totals
from exchange.markets import Market
from exchange.risk import RiskEngine
from schemas.enums import LiquidationStage, Liquidity, MarginMode, Side
from schemas.events import (
    Deposit,
    Fill,
    LiquidationOutcome,
    LiquidationTrigger,
    MarkPrice,
    SetLeverage,
    SetMarginMode,
)

MARKETS = {
    "BTC-PERP": Market("BTC-PERP", "0.1", "0.001", 40),
    "ETH-PERP": Market("ETH-PERP", "0.01", "0.01", 25),
    "SOL-PERP": Market("SOL-PERP", "0.01", "0.01", 20),
}
START = {"BTC-PERP": 650_000, "ETH-PERP": 350_000, "SOL-PERP": 15_000}  # ticks
SIZE = {"BTC-PERP": (1, 200), "ETH-PERP": (1, 300), "SOL-PERP": (10, 5_000)}  # lots


def build(accounts: int, multi: float, seed: int) -> tuple[RiskEngine, float]:
    rng = random.Random(seed)
    engine = RiskEngine(MARKETS)
    seq = 0

    def send(message_type, *fields):
        nonlocal seq
        seq += 1
        engine.apply(message_type("bench", seq, *fields))

    send(Deposit, "mm", 10**18)
    for symbol, price in START.items():
        send(MarkPrice, symbol, price, price)
    symbols = list(MARKETS)
    started = time.perf_counter()
    for index in range(accounts):
        account = f"a{index}"
        send(Deposit, account, rng.randint(200, 20_000) * 1_000_000)
        holdings = symbols if rng.random() < multi else [rng.choice(symbols)]
        isolated = len(holdings) == 1 and rng.random() < 0.5
        for symbol in holdings:
            if isolated:
                send(SetMarginMode, account, symbol, MarginMode.ISOLATED)
            send(SetLeverage, account, symbol, rng.randint(2, MARKETS[symbol].max_leverage // 2))
            side = rng.choice((Side.BUY, Side.SELL))
            low, high = SIZE[symbol]
            seq += 1
            engine.apply(Fill("bench", seq, symbol, seq, START[symbol], rng.randint(low, high), side,
                              account, 0, "mm", 0, Liquidity.BOOK))
    return engine, time.perf_counter() - started


def settle(engine: RiskEngine, triggers: list[LiquidationTrigger]) -> None:
    """Close every triggered bucket as a backstop does (positions to "mm" at the mark) and
    end its liquidation, so that buckets do not pile up in liquidation."""
    for trigger in triggers:
        for position in trigger.positions:
            long = position.signed_size > 0
            engine.apply(Fill("bench", 0, position.market, 0, position.mark_price, abs(position.signed_size),
                              Side.SELL if long else Side.BUY, trigger.account, 0, "mm", 0, Liquidity.BACKSTOP))
        engine.apply(LiquidationOutcome("bench", 0, trigger.account, trigger.market, trigger.mode,
                                        LiquidationStage.BACKSTOP, 0))


def naive_scan(engine: RiskEngine, symbol: str) -> int:
    """Value every account holding ``symbol`` and count buckets with equity < MM."""
    marks = engine.marks
    count = 0
    for account in engine.accounts.values():
        position = account.position(symbol)
        if position is None or not position.size:
            continue
        if position.mode is MarginMode.ISOLATED:
            equity, _, mm, _ = isolated_totals(position, marks)
        else:
            equity, _, mm, _ = cross_totals(account, marks)
        count += equity < mm
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000, help="accounts (default 100000)")
    parser.add_argument("--updates", type=int, default=1_000, help="mark updates (default 1000)")
    parser.add_argument("--multi", type=float, default=0.01,
                        help="share of cross accounts holding all three markets (default 0.01)")
    parser.add_argument("--naive-every", type=int, default=50, help="time the naive scan every Nth update (default 50)")
    parser.add_argument("--seed", type=int, default=3, help="seed (default 3)")
    args = parser.parse_args()

    print(f"building {args.accounts:,} accounts ({args.multi:.0%} cross in all three markets) ...", flush=True)
    engine, seconds = build(args.accounts, args.multi, args.seed)
    print(f"built in {seconds:.1f} s: {sum(len(engine.holders[s]) for s in MARKETS):,} positions")

    rng = random.Random(args.seed + 1)
    marks = dict(START)
    symbols = list(MARKETS)
    groups = ((0, 0), (1, 10), (11, 100), (101, 1000), (1001, 10**9))
    indexed: dict[tuple[int, int], list[tuple[float, int, int]]] = {group: [] for group in groups}
    naive_times: list[float] = []
    liquidated = 0
    for update in range(args.updates):
        symbol = symbols[update % 3]
        drift = -0.002 if symbol == "SOL-PERP" else 0.0
        marks[symbol] = max(1, round(marks[symbol] * (1 + drift + rng.gauss(0, 0.003))))
        event = MarkPrice("bench", 10**9 + update, symbol, marks[symbol], marks[symbol])
        checked_before = engine.buckets_checked
        started = time.perf_counter()
        out = engine.apply(event)
        elapsed = time.perf_counter() - started
        checked = engine.buckets_checked - checked_before
        new = [e for e in out if isinstance(e, LiquidationTrigger) and not e.update]
        triggered = len(new)
        liquidated += triggered
        settle(engine, new)  # what the liquidation engine would do; not timed
        group = next(g for g in groups if g[0] <= checked <= g[1])
        indexed[group].append((elapsed, checked, triggered))
        if update % args.naive_every == 0:
            started = time.perf_counter()
            naive_scan(engine, symbol)
            naive_times.append(time.perf_counter() - started)
    print(f"{args.updates} mark updates, {liquidated} positions liquidated")
    print(f"{'accounts checked':>18} {'updates':>8} {'liquidated/update':>18} {'indexed, mean':>14} {'per check':>10}")
    for (low, high), rows in indexed.items():
        if rows:
            mean_time = statistics.mean(r[0] for r in rows)
            mean_checked = statistics.mean(r[1] for r in rows)
            label = f"{low}" if low == high else f"{low}-{high}" if high < 10**9 else f">{low - 1}"
            per_check = f"{mean_time / mean_checked * 1e6:.0f} µs" if mean_checked else "-"
            print(f"{label:>18} {len(rows):>8} {statistics.mean(r[2] for r in rows):>18.1f} "
                  f"{mean_time * 1e6:>11,.0f} µs {per_check:>10}")
    every = [r[0] for rows in indexed.values() for r in rows]
    print(f"indexed, all updates: mean {statistics.mean(every) * 1e6:,.0f} µs, "
          f"median {statistics.median(every) * 1e6:,.0f} µs")
    print(f"naive full scan ({len(naive_times)} sampled updates): mean {statistics.mean(naive_times) * 1e3:,.1f} ms")
    ratio = statistics.mean(naive_times) / statistics.mean(every)
    print(f"ratio naive/indexed: {ratio:.0f}")


if __name__ == "__main__":
    main()
