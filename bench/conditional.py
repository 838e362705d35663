"""What resting conditional orders cost the matching engine (which holds them).

The same seeded stream (bench.matching's limit orders, cancels and sweeps, with a mark
price update every ``--mark-every`` commands) goes through two engines, alternately, in
the same run:

  (a) an engine with no conditional orders;
  (b) an engine holding ``--conditionals`` (10,000) resting conditional orders: stops,
      take-profits and trailing stops (five callback rates, some waiting for their
      activation price), half on the mark and half on the last price, with their
      triggers one in ten within the stream's range of prices (they fire) and the rest 1%
      to 30% away (they wait).

A trade or mark update should cost time in proportion to the orders it fires, not to the
orders waiting: the ratio (b) / (a) in commands/s, printed last, should be near 1. The
fired count is printed so a reader can see they did fire.

    python -m bench.conditional [--commands 200000] [--conditionals 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bench.matching import engine_commands, make_stream
from exchange.markets import default_markets
from exchange.matching import MatchingEngine
from schemas.enums import (
    Condition,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import MarkPrice, NewOrder, OrderTriggered

SYMBOL = "BTC-PERP"
MID = 600_000


def with_marks(commands: list, every: int) -> list:
    """The stream with a mark update after every ``every`` commands, following the last
    limit price seen (so the mark walks with the book)."""
    out, last = [], MID
    for index, command in enumerate(commands, 1):
        out.append(command)
        if isinstance(command, NewOrder):
            last = command.price
        if index % every == 0:
            out.append(MarkPrice("oracle", index, SYMBOL, last, last, index))
    return out


def conditionals(count: int, seed: int) -> list[NewOrder]:
    rng = random.Random(seed)
    orders = []
    for index in range(count):
        condition = rng.choice((Condition.STOP, Condition.TAKE_PROFIT, Condition.TRAILING_STOP))
        side = rng.choice((Side.BUY, Side.SELL))
        source = rng.choice((TriggerSource.MARK, TriggerSource.LAST))
        near = rng.random() < 0.1  # inside the stream's range of prices: these fire
        distance = rng.randint(10, 400) if near else MID * rng.randint(10, 300) // 1000  # 1% to 30% away
        rising = (condition is Condition.STOP) == (side is Side.BUY)
        trigger = MID + distance if rising else MID - distance
        activation = callback = 0
        if condition is Condition.TRAILING_STOP:
            trigger = 0
            callback = rng.choice((1_000, 5_000, 10_000, 20_000, 50_000))
            if rng.random() < 0.5:
                activation = MID + distance if side is Side.SELL else MID - distance
        orders.append(NewOrder("risk.p0", index + 1, f"c{index % 500}", SYMBOL, 10**9 + index, f"s{index}", side,
                               OrderType.MARKET, TimeInForce.IOC, 0, 10, False, SelfTradePrevention.NONE, 0, 0,
                               False, condition, trigger, source, False, activation, callback))
    return orders


def engine(preloaded: list[NewOrder]) -> MatchingEngine:
    matching = MatchingEngine(default_markets()[SYMBOL])
    matching.apply(MarkPrice("oracle", 0, SYMBOL, MID, MID, 0))
    for order in preloaded:
        events = matching.apply(order)
        assert type(events[0]).__name__ == "OrderAccepted", events[0]
    return matching


def run(matching: MatchingEngine, commands: list) -> tuple[float, int]:
    apply = matching.apply
    fired = 0
    start = time.perf_counter()
    for command in commands:
        for event in apply(command):
            if type(event) is OrderTriggered:
                fired += 1
    return time.perf_counter() - start, fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=200_000, help="commands in the stream (default 200000)")
    parser.add_argument("--conditionals", type=int, default=10_000, help="resting conditional orders (default 10000)")
    parser.add_argument("--mark-every", type=int, default=20, help="a mark update every N commands (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, the median is reported (default 5)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the streams (default 7)")
    args = parser.parse_args()

    commands = with_marks(engine_commands(make_stream(args.commands, args.seed), SYMBOL), args.mark_every)
    waiting = conditionals(args.conditionals, args.seed)
    print(f"stream: {len(commands)} commands (a mark every {args.mark_every}), {len(waiting)} conditional orders")
    plain, loaded, fired = [], [], 0
    for _ in range(args.runs):
        seconds, _ = run(engine([]), commands)
        plain.append(seconds)
        holder = engine(waiting)
        seconds, fired = run(holder, commands)
        loaded.append(seconds)
        left = len(holder.triggers)
    plain_rate = len(commands) / statistics.median(plain)
    loaded_rate = len(commands) / statistics.median(loaded)
    print(f"no conditional orders:        {plain_rate:>10,.0f} commands/s")
    print(f"{len(waiting):,} conditional orders: {loaded_rate:>10,.0f} commands/s "
          f"({fired:,} fired during the stream, {left:,} still waiting)")
    print(f"ratio with / without: {loaded_rate / plain_rate:.2f}")


if __name__ == "__main__":
    main()
