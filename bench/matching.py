"""Matching throughput: perpsim's engine against a minimal book, in the same run.

A seeded stream of commands (about 60% passive limit orders near the touch, 25% cancels of
live orders, 15% marketable IOC orders sweeping 1 to 3 levels) goes through

  (a) ``exchange.matching.MatchingEngine`` with every event it emits (acks, fills,
      closes, book deltas, BBO), the book published after every command, and again with
      the book coalesced per batch of ``--batch`` commands (``coalesce``, as the matching
      service publishes it once per fetched batch), and
  (b) the baseline below: a SortedDict of price -> deque, a dict for cancels, fills only.

Runs alternate (baseline, engine) so that both see the same machine load; each figure is
the median of the runs. Where the core is compiled (``python -m exchange``), every run is
followed by the same run in a second process that interprets the same source
(``PERPSIM_PURE=1``), so both builds are measured against their own baseline in one run.
The last lines are the ratios coalesced engine / baseline and engine / baseline in commands/s.

    python -m bench.matching [--commands 200000] [--runs 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import deque

from sortedcontainers import SortedDict

import exchange
from exchange.markets import default_markets
from exchange.matching import MatchingEngine
from schemas.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import CancelOrder, NewOrder


class BaselineBook:
    """The least a book can do: price levels of FIFO deques, lazy cancel, fills only."""

    def __init__(self) -> None:
        self.bids = SortedDict()  # -price -> deque[[order_id, size]]
        self.asks = SortedDict()
        self.live: dict[int, list] = {}
        self.fills = 0

    def limit(self, order_id: int, is_buy: bool, price: int, size: int, rest: bool) -> None:
        book, key_sign = (self.asks, 1) if is_buy else (self.bids, -1)
        while size and book:
            key, level = book.peekitem(0)
            level_price = key * key_sign
            if (level_price > price) if is_buy else (level_price < price):
                break
            while size and level:
                maker = level[0]
                if maker[1] == 0:  # cancelled
                    level.popleft()
                    continue
                quantity = min(size, maker[1])
                maker[1] -= quantity
                size -= quantity
                self.fills += 1
                if maker[1] == 0:
                    level.popleft()
                    del self.live[maker[0]]
            if not level:
                del book[key]
        if size and rest:
            own = self.bids if is_buy else self.asks
            key = -price if is_buy else price
            level = own.get(key)
            if level is None:
                level = own[key] = deque()
            entry = [order_id, size]
            level.append(entry)
            self.live[order_id] = entry

    def cancel(self, order_id: int) -> None:
        entry = self.live.pop(order_id, None)
        if entry is not None:
            entry[1] = 0

    def best(self, is_bid: bool) -> int | None:
        book = self.bids if is_bid else self.asks
        while book:
            key, level = book.peekitem(0)
            while level and level[0][1] == 0:
                level.popleft()
            if level:
                return -key if is_bid else key
            del book[key]
        return None

    def depth(self, is_bid: bool, levels: int) -> int:
        book = self.bids if is_bid else self.asks
        return sum(entry[1] for level in book.values()[:levels] for entry in level)


def make_stream(count: int, seed: int) -> list[tuple]:
    """A command stream shaped against a model book, so cancels hit live orders and
    sweeps take 1 to 3 levels. Each command: ("add", id, is_buy, price, size, rest) or
    ("cancel", id)."""
    rng = random.Random(seed)
    model = BaselineBook()
    mid = 600_000
    stream: list[tuple] = []
    next_id = 1
    for _ in range(count):
        roll = rng.random()
        best_bid = model.best(True) or mid - 1
        best_ask = model.best(False) or mid + 1
        if roll < 0.60 or not model.live:
            is_buy = rng.random() < 0.5
            offset = rng.randint(0, 20)
            price = best_ask - 1 - offset if is_buy else best_bid + 1 + offset
            if price <= 0:
                price = 1
            command = ("add", next_id, is_buy, price, rng.randint(1, 50), True)
        elif roll < 0.85:
            order_id = rng.choice(list(model.live)) if len(model.live) < 64 else _random_live(rng, model)
            command = ("cancel", order_id)
        else:
            is_buy = rng.random() < 0.5
            levels = rng.randint(1, 3)
            side_book = model.asks if is_buy else model.bids
            keys = side_book.keys()[:levels]
            if not keys:
                continue
            price = keys[-1] if is_buy else -keys[-1]
            size = max(1, model.depth(not is_buy, levels))
            command = ("add", next_id, is_buy, price, size, False)
        if command[0] == "add":
            model.limit(*command[1:])
            next_id += 1
        else:
            model.cancel(command[1])
        stream.append(command)
        if rng.random() < 0.01:
            mid += rng.choice((-5, 5))
    return stream


def _random_live(rng: random.Random, model: BaselineBook) -> int:
    # sample by id range and probe, instead of materialising the dict on every cancel
    high = max(model.live)
    while True:
        candidate = rng.randint(1, high)
        if candidate in model.live:
            return candidate


def run_baseline(stream: list[tuple]) -> tuple[float, int]:
    book = BaselineBook()
    limit, cancel = book.limit, book.cancel
    start = time.perf_counter()
    for command in stream:
        if command[0] == "add":
            limit(command[1], command[2], command[3], command[4], command[5])
        else:
            cancel(command[1])
    return time.perf_counter() - start, book.fills


def engine_commands(stream: list[tuple], symbol: str) -> list:
    commands = []
    for seq, command in enumerate(stream, 1):
        if command[0] == "add":
            _, order_id, is_buy, price, size, rest = command
            commands.append(NewOrder(
                "bench", seq, f"acct{order_id % 1000}", symbol, order_id, "",
                Side.BUY if is_buy else Side.SELL, OrderType.LIMIT,
                TimeInForce.GTC if rest else TimeInForce.IOC, price, size,
                False, SelfTradePrevention.NONE, seq,
            ))
        else:
            commands.append(CancelOrder("bench", seq, f"acct{command[1] % 1000}", symbol, command[1], seq))
    return commands


def run_engine(commands: list, batch: int = 0) -> tuple[float, int, int]:
    """The engine over the stream; ``batch``: book deltas and BBO coalesced per that many
    commands, as the matching service publishes them (0: after every command)."""
    engine = MatchingEngine(default_markets()["BTC-PERP"])
    apply = engine.apply
    events = 0
    start = time.perf_counter()
    if batch:
        engine.coalesce = True
        publish = engine.publish_book
        for first in range(0, len(commands), batch):
            for command in commands[first:first + batch]:
                events += len(apply(command))
            events += len(publish(first + batch))
    else:
        for command in commands:
            events += len(apply(command))
    return time.perf_counter() - start, events, engine.trade_id


def measure(stream: list[tuple], commands: list, batch: int) -> tuple[float, float, float, int, int]:
    """One run of the baseline, the engine, and the engine coalescing its book per batch:
    (baseline cmd/s, engine cmd/s, coalesced cmd/s, engine events, coalesced events)."""
    seconds, _ = run_baseline(stream)
    baseline = len(stream) / seconds
    seconds, events, _ = run_engine(commands)
    engine = len(stream) / seconds
    seconds, coalesced_events, _ = run_engine(commands, batch)
    return baseline, engine, len(stream) / seconds, events, coalesced_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=200_000, help="commands in the stream (default 200000)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, the median is reported (default 5)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the command stream (default 7)")
    parser.add_argument("--batch", type=int, default=100,
                        help="commands per batch for the coalesced book feed (default 100)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the interpreted twin's answer
    args = parser.parse_args()

    stream = make_stream(args.commands, args.seed)
    commands = engine_commands(stream, "BTC-PERP")
    if args.json:
        print(json.dumps(measure(stream, commands, args.batch)))
        return
    adds = sum(1 for c in stream if c[0] == "add" and c[5])
    sweeps = sum(1 for c in stream if c[0] == "add" and not c[5])
    print(f"stream: {len(stream)} commands, seed {args.seed}: {adds} limit adds, "
          f"{len(stream) - adds - sweeps} cancels, {sweeps} marketable")
    print(f"this process: core {exchange.BUILD}")
    twin = exchange.COMPILED  # then the same stream through the interpreted core, in a process of its own
    if twin:
        print("each run followed by the interpreted core's (PERPSIM_PURE=1), in a second process")
    ratios, coalesced_ratios, pure_ratios, rates = [], [], [], []
    events = coalesced_events = 0
    for run in range(args.runs):
        baseline, engine, coalesced, events, coalesced_events = measure(stream, commands, args.batch)
        ratios.append(engine / baseline)
        coalesced_ratios.append(coalesced / baseline)
        rates.append((baseline, engine, coalesced))
        line = (f"run {run + 1}: baseline {baseline:,.0f} cmd/s, engine {engine:,.0f} ({ratios[-1]:.2f}), "
                f"coalesced {coalesced:,.0f} ({coalesced_ratios[-1]:.2f})")
        if twin:
            pure_baseline, pure_engine, _, _, _ = interpreted(args)
            pure_ratios.append(pure_engine / pure_baseline)
            line += f"; interpreted engine {pure_engine:,.0f} ({pure_ratios[-1]:.2f})"
        print(line)
    baseline, engine, coalesced = (statistics.median(r[i] for r in rates) for i in range(3))
    build = exchange.BUILD.split(" ")[0]
    print(f"baseline (SortedDict+deque, fills only):  {baseline:,.0f} commands/s")
    print(f"engine ({build}, book after every command): {engine:,.0f} commands/s, "
          f"{events / len(stream):.2f} events per command")
    print(f"engine ({build}, book per {args.batch} commands):  {coalesced:,.0f} commands/s, "
          f"{coalesced_events / len(stream):.2f} events per command")
    ratio = statistics.median(ratios)  # per run: same load
    if pure_ratios:
        pure = statistics.median(pure_ratios)
        print(f"interpreted engine/baseline: {pure:.2f}; compiled/interpreted: {ratio / pure:.2f}")
    print(f"ratio coalesced engine/baseline: {statistics.median(coalesced_ratios):.2f}")
    print(f"ratio engine/baseline: {ratio:.2f}")


def interpreted(args: argparse.Namespace) -> tuple[float, float, float, int, int]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.matching", "--json", "--runs", "1", "--commands", str(args.commands),
         "--seed", str(args.seed), "--batch", str(args.batch)],
        env={**os.environ, "PERPSIM_PURE": "1"}, capture_output=True, text=True, check=True,
    )
    baseline, engine, coalesced, events, coalesced_events = json.loads(done.stdout.splitlines()[-1])
    return baseline, engine, coalesced, events, coalesced_events


if __name__ == "__main__":
    main()
