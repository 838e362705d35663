"""A scenario's participants trading live on the services, over the in-process bus."""

from __future__ import annotations

import asyncio

import pytest

from exchange.markets import default_markets
from schemas import topic_partitions
from services.liquidation import spec as liquidation_spec
from services.matching import spec as matching_spec
from services.oracle import OracleService
from services.risk import spec as risk_spec
from services.runtime.broker import die_with_parent
from services.runtime.memory import MemoryBus
from services.runtime.runner import ServiceRunner
from services.sim.live import LiveMarket
from services.sim.simulation import load_scenario, sources

pytestmark = pytest.mark.integration


async def test_a_live_flash_crash_liquidates_in_both_modes():
    markets = default_markets()
    scenario = load_scenario("flash-crash")
    bus = MemoryBus(topic_partitions(2))
    stop = asyncio.Event()
    services = [ServiceRunner(spec, bus) for spec in (matching_spec(markets), risk_spec(markets, partitions=2),
                                                             liquidation_spec(markets))]
    oracle = OracleService(bus, markets, sources(scenario, markets, scenario.seed), tick_s=0.25)
    tasks = [asyncio.create_task(service.run(stop)) for service in services]
    tasks.append(asyncio.create_task(oracle.run(stop)))
    try:
        market = LiveMarket(bus, markets, scenario)
        stats = await market.run(duration_s=28)  # the crash is at 15 s to 23 s of oracle time, with margin
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert stats.orders > 1000 and stats.fills > 100
    modes = {mode for _, _, mode, _, _ in stats.liquidations}
    assert modes == {"ISOLATED", "CROSS"}, stats.liquidations
    assert stats.latencies and max(stats.latencies) < 5
    assert stats.stops_fired > 0  # the careful traders' stops, on the live services too
    assert sum(service.dead_letters for service in services) == 0
    # the exchange's own books balance: every long has a short
    leveraged = [a for agent in market.agents for a in agent.accounts]
    assert leveraged and sum(market.view.fills.values()) == 0


def test_perpsim_up_runs_a_live_scenario_end_to_end_and_writes_the_report(tmp_path):
    import json
    import subprocess
    import sys

    from tests.integration.conftest import ROOT, free_ports

    report = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--scenario", "flash-crash", "--duration", "32",
         *free_ports(),
         "--state-dir", str(tmp_path / "state"), "--report", str(report), "--no-dashboard", "--log-level", "WARNING"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for name in ("summary.json", "summary.txt", "marks.png", "pnl.png", "insurance_fund.png", "latency.png",
                 "report.html"):
        assert (report / name).stat().st_size > 10_000 or name.startswith("summary"), name
    # the services logged into the run's folder, not over the terminal; the page links them
    logs = report / "logs"
    assert {p.name for p in logs.iterdir()} >= {"matching.log", "risk.log", "liquidation.log", "oracle.log",
                                                "gateway.log", "up.log"}
    assert "service=" not in result.stderr  # no service's line on the terminal (they log at WARNING here)
    assert 'href="logs/risk.log"' in (report / "report.html").read_text()
    text = (report / "summary.txt").read_text()
    assert "{" not in text and "invariants" in text  # formatted, no raw dicts
    summary = json.loads((report / "summary.json").read_text())
    assert summary["invariants"] == "hold"
    assert summary["liquidations_by_mode"].get("isolated", 0) > 0 and summary["liquidations_by_mode"].get("cross", 0) > 0
    assert summary["orders"] > 1000 and summary["fills"] > 100
    assert summary["stops_fired"] > 0
    assert "liquidations isolated=" in result.stderr  # the progress lines


def test_loadtest_ramps_and_reports_the_sustainable_rate(tmp_path):
    import re
    import subprocess
    import sys

    from tests.integration.conftest import ROOT, free_ports

    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "loadtest", "--rate", "100", "--factor", "3", "--max-rate", "900",
         *free_ports(),
         "--duration", "2", "--p99-limit", "1000", "--state-dir", str(tmp_path / "state"), "--log-level", "WARNING"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    steps = re.findall(r"^\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)/(\d+)$", result.stdout, re.M)
    asked = [int(rate.replace(",", "")) for rate, *_ in steps]
    assert asked[:2] == [100, 300] and asked == [100, 300, 900][:len(asked)]  # the geometric ramp
    first = steps[0]
    assert int(first[4]) == int(first[5]) == 200  # at 100/s for 2 s, every order came back accepted
    sustained = re.search(r"sustainable: ([\d,]+) orders/s", result.stdout)
    assert sustained and int(sustained.group(1).replace(",", "")) in asked


async def test_a_calm_live_run_with_a_ccxt_bot_beside_the_participants_keeps_every_invariant():
    """The end-of-run check counts every account: the participants', the fund's, and a bot's
    API-key account trading through the gateway with ccxt. Its expected deposits are the
    scenario's (fund + each participant's) plus the bot's, computed here."""
    from exchange.core import money
    from tests.integration.test_gateway import scenario_venue, signed

    async with scenario_venue("calm") as (client, gateway, scenario):
        await client.deposit("bot", "2000")
        market = LiveMarket(gateway.bus, gateway.markets, scenario)
        run = asyncio.create_task(market.run(duration_s=14))
        async with signed(gateway, "bot") as bot:
            await asyncio.sleep(6)  # the market makers quote
            await bot.create_order("SOL/USDT:USDT", "market", "buy", 2)
            await bot.create_order("SOL/USDT:USDT", "market", "sell", 1)
            [position] = await bot.fetch_positions(["SOL/USDT:USDT"])
        stats = await run
    assert position["contracts"] == 1.0
    assert market.view.snapshots["bot"].positions  # the bot's account is among those held
    expected = money(scenario.insurance_fund) + sum(money(a.deposit) * len(a.accounts) for a in market.agents) \
        + money("2000")
    assert market.view.transfers == expected
    assert stats.problems == [] and not stats.unchecked, stats.unchecked


async def test_run_bootstrap_trades_an_example_strategy_on_a_running_venue_beside_its_participants(stack_factory,
                                                                                                  tmp_path):
    """`perpsim run --strategy ... --bootstrap` against the services as processes with a
    live calm market: the example grid maker trades, its report holds, and the venue's
    invariants (every account counted, the strategy's too) hold."""
    import csv
    import json
    import sys

    from tests.integration.conftest import ROOT, kafka_bus

    markets = default_markets()
    scenario = load_scenario("calm")
    stack = stack_factory(partitions=2, extra=["--scenario", "calm"])
    stack.start("matching", "risk", "liquidation", "oracle")
    bus = await kafka_bus(stack.bootstrap, 2)
    report = tmp_path / "grid"
    try:
        market = LiveMarket(bus, markets, scenario)
        participants = asyncio.create_task(market.run(duration_s=30))
        await asyncio.sleep(6)  # the market makers quote
        strategy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "run", "--strategy",
            str(ROOT / "examples/strategies/grid.py:GridMaker"), "--bootstrap", stack.bootstrap,
            "--partitions", "2", "--duration", "18", "--account", "grid", "--report", str(report),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
        out, err = await asyncio.wait_for(strategy.communicate(), 90)
        stats = await participants
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
    assert strategy.returncode == 0, (out.decode()[-2000:], err.decode()[-3000:])
    summary = json.loads((report / "summary.json").read_text())
    assert summary["account"] == "grid" and summary["orders"] >= 6 and summary["errors"] == 0
    assert summary["fills"] > 0, summary  # the takers hit its grid
    trades = list(csv.DictReader((report / "trades.csv").read_text().splitlines()))
    assert len(trades) == summary["fills"]
    # its position as the participants' own client saw the venue's fills, from its trades.csv
    signed = sum((1 if t["side"] == "buy" else -1) * round(float(t["size"]) * 100) for t in trades)
    assert market.view.fills.get(("grid", "SOL-PERP"), 0) == signed
    assert stats.problems == [] and not stats.unchecked, (stats.problems, stats.unchecked)  # the strategy's deposit and trades included
    assert "PnL" in out.decode() and (report / "strategy.png").stat().st_size > 10_000


async def test_participants_wait_for_a_venue_that_does_not_answer_instead_of_queueing_without_bound():
    """Risk answers deposits but no matching engine answers orders: after a bounded number
    unanswered, the participants hold their ticks (backpressure) rather than send on."""
    from tests.integration.conftest import Oracle

    markets = default_markets()
    bus = MemoryBus(topic_partitions(2))
    stop = asyncio.Event()
    risk = asyncio.create_task(ServiceRunner(risk_spec(markets, partitions=2), bus).run(stop))
    try:
        await Oracle(bus, wall_clock=True).mark("SOL-PERP", "150")
        market = LiveMarket(bus, markets, load_scenario("calm"))
        enough = asyncio.Event()  # stopped after 4 s, as Ctrl-C would: it settles briefly, not for a minute
        asyncio.get_running_loop().call_later(4, enough.set)
        stats = await market.run(duration_s=30, stop=enough)
    finally:
        stop.set()
        await risk
    per_tick = max(len(list(agent.on_tick(market.view))) for agent in market.agents) * len(market.agents)
    assert stats.held_ticks > 0
    assert stats.orders <= 200 + per_tick  # the bound, and at most one tick's worth past it
