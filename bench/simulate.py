"""The whole in-process stack: simulated orders per second, compiled core against interpreted.

Runs a bundled scenario (default ``flash-crash``: market makers, takers and leveraged
traders in isolated and cross margin through a SOL crash, with liquidations, backstop and
funding) with ``services.sim.simulation.simulate``: participants, risk, matching,
liquidation and the oracle in one process, exactly what ``perpsim simulate`` runs. Each
run in this process is followed by the same run in a second process that interprets the
core from the same source (``PERPSIM_PURE=1``), so both see the same machine load.

Per run it prints orders/s (orders placed by the participants over the wall time of the
run) and how much of that time went into the exchange (``CoreExchange.submit``: risk,
matching, liquidation) rather than into the participants and the oracle. The last line is
the ratio compiled / interpreted in orders/s (1.00 when this process is interpreted too).

    python -m bench.simulate [--scenario flash-crash] [--duration 120] [--runs 5] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import exchange
from services.sim.simulation import load_scenario, simulate


def run(scenario: str, duration: float, seed: int) -> tuple[float, float, int, int]:
    """(orders/s, share of the time in the exchange, orders, fills)."""
    result = simulate(load_scenario(scenario), seed=seed, duration_s=duration, check_every=10**9)
    if result.problems:
        raise SystemExit(f"the invariants failed: {result.problems[:3]}")
    return result.orders / result.wall_s, sum(result.latencies) / result.wall_s, result.orders, len(result.fills)


def interpreted(args: argparse.Namespace) -> tuple[float, float, int, int]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.simulate", "--json", "--runs", "1", "--scenario", args.scenario,
         "--duration", str(args.duration), "--seed", str(args.seed)],
        env={**os.environ, "PERPSIM_PURE": "1"}, capture_output=True, text=True, check=True,
    )
    rate, share, orders, fills = json.loads(done.stdout.splitlines()[-1])
    return rate, share, orders, fills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="flash-crash", help="a bundled scenario or a .toml file (default flash-crash)")
    parser.add_argument("--duration", type=float, default=120.0, help="simulated seconds per run (default 120)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each build, the median is reported (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the participants and prices (default 1)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the interpreted twin's answer
    args = parser.parse_args()
    if args.json:
        print(json.dumps(run(args.scenario, args.duration, args.seed)))
        return
    print(f"scenario {args.scenario}, {args.duration:g} simulated s, seed {args.seed}; this process: core {exchange.BUILD}")
    twin = exchange.COMPILED
    if not twin:
        print("the core is not compiled here: only the interpreted build is measured")
    ratios, rates, pure_rates = [], [], []
    for number in range(args.runs):
        rate, share, orders, fills = run(args.scenario, args.duration, args.seed)
        rates.append(rate)
        line = f"run {number + 1}: {orders} orders, {fills} fills: {rate:,.0f} orders/s ({share:.0%} in the exchange)"
        if twin:
            pure_rate, pure_share, pure_orders, pure_fills = interpreted(args)
            if (pure_orders, pure_fills) != (orders, fills):
                raise SystemExit(f"the interpreted run differs: {pure_orders} orders, {pure_fills} fills")
            pure_rates.append(pure_rate)
            ratios.append(rate / pure_rate)
            line += f"; interpreted {pure_rate:,.0f} orders/s ({pure_share:.0%} in the exchange)"
        print(line)
    print(f"compiled core: {statistics.median(rates):,.0f} orders/s" if twin else
          f"interpreted core: {statistics.median(rates):,.0f} orders/s")
    if twin:
        print(f"interpreted core: {statistics.median(pure_rates):,.0f} orders/s")
    print(f"ratio compiled/interpreted: {statistics.median(ratios) if twin else 1.0:.2f}")


if __name__ == "__main__":
    main()
