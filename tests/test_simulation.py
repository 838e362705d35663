"""Simulated markets: participants, scenarios, determinism and the report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from services.cli import main
from services.sim.report import write_report
from services.sim.simulation import (
    ScenarioError,
    load_scenario,
    scenario_names,
    simulate,
    trade_list,
)


def test_the_same_seed_gives_the_same_market():
    scenario = load_scenario("flash-crash")
    first = simulate(scenario, seed=9, duration_s=25)
    second = simulate(scenario, seed=9, duration_s=25)
    assert trade_list(first) == trade_list(second)
    assert len(trade_list(first)) > 200
    assert [s.marks for s in first.samples] == [s.marks for s in second.samples]
    other = simulate(scenario, seed=10, duration_s=25)
    assert trade_list(other) != trade_list(first)


def test_a_flash_crash_liquidates_in_both_modes_and_keeps_the_invariants(tmp_path):
    result = simulate(load_scenario("flash-crash"))
    assert result.problems == []
    modes = {trigger.mode.name for trigger in result.liquidations}
    assert modes == {"ISOLATED", "CROSS"}
    paths = write_report(result, tmp_path / "report")
    for name in ("summary.json", "summary.txt", "marks.png", "insurance_fund.png", "pnl.png", "latency.png",
                 "report.html"):
        assert paths[name].exists() and paths[name].stat().st_size > 0, name
    for name in ("marks.png", "insurance_fund.png", "pnl.png", "latency.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(paths["summary.json"].read_text())
    assert summary["liquidations_by_mode"]["isolated"] == sum(1 for t in result.liquidations if t.mode.name == "ISOLATED")
    assert summary["liquidations_by_mode"]["cross"] == sum(1 for t in result.liquidations if t.mode.name == "CROSS")
    assert summary["fills"] == len(result.fills) and summary["invariants"] == "hold"
    page = paths["report.html"].read_text()
    assert page.count("data:image/png;base64,") == 4 and "flash-crash" in page
    # the careful traders' stops fire in the crash, and the report counts them
    fired = [e for e in result.exchange.log if type(e).__name__ == "OrderTriggered"]
    assert summary["stops"]["fired"] == len(fired) > 5
    assert "stops" in paths["summary.txt"].read_text()


def test_in_a_flash_crash_traders_with_stops_are_liquidated_less_often():
    result = simulate(load_scenario("flash-crash"))
    log = result.exchange.log
    placed = {e.account for e in log if type(e).__name__ == "OrderAccepted" and e.condition}
    opened = {side for e in log if type(e).__name__ == "Fill"
              for side in (e.taker_account, e.maker_account) if side.startswith("lev")}
    liquidated = {t.account for t in result.liquidations}
    with_stops, without = opened & placed, opened - placed
    assert len(with_stops) >= 10 and len(without) >= 40
    assert len(liquidated & with_stops) / len(with_stops) < len(liquidated & without) / len(without) / 2


def test_funding_squeeze_pays_funding_and_isolated_vs_cross_spares_the_cross_accounts():
    squeeze = simulate(load_scenario("funding-squeeze"))
    assert len(squeeze.funding_events) >= 5
    assert all(event.rate_ppb > 0 for event in squeeze.funding_events)  # crowded longs pay
    mission = simulate(load_scenario("isolated-vs-cross"))
    # the same 1,500 SOL longs at 5x through −30%: the isolated ones (300 of margin) are
    # liquidated; the cross ones, backed by their whole 2,000, are not
    liquidated = {trigger.account for trigger in mission.liquidations}
    leveraged = next(agent for agent in mission.agents if agent.kind == "leveraged")
    isolated = {a for a in leveraged.accounts if leveraged.modes[a].name == "ISOLATED"}
    assert liquidated == isolated
    market = mission.exchange.markets["SOL-PERP"]
    for account in isolated:  # and lost at most what they put into the bucket (margin + fee)
        mine = [f for f in mission.fills if f.taker_account == account]
        opening = [f for f in mine if f.taker_order_id == mine[0].taker_order_id]
        notional = sum(f.price * f.size * market.value_per_tick_lot for f in opening)
        margin, fee = -(-notional // 5), -(-notional * market.taker_fee_ppm // 1_000_000)
        assert margin > 290 * 1_000_000  # the mission's ~300
        assert mission.exchange.risk.accounts[account].balance >= 2000 * 1_000_000 - margin - fee


def test_every_bundled_scenario_loads_and_runs_briefly():
    for name in scenario_names():
        result = simulate(load_scenario(name), duration_s=2)
        assert result.problems == [] and result.orders > 0, name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name = 'x'\nspeed = 3\n[oracle.SOL-PERP]\nstart = 1\n", "unknown field.*speed"),
        ("name = 'x'\n", "at least one \\[oracle.MARKET\\]"),
        ("[oracle.SOL-PERP]\nstart = 150\nwobble = 1\n", "unknown field.*wobble"),
        ("[oracle.SOL-PERP]\nstart = 150\n[[participants]]\nkind = 'whale'\n", "kind 'whale'"),
        ("[oracle.DOGE-PERP]\nstart = 1\n", "DOGE-PERP.*not a market"),
        ("[oracle.SOL-PERP]\nstart = 150\nshocks = ['down a lot']\n", "cannot read shock"),
        ("[oracle.SOL-PERP]\nstart = 150\n[[participants]]\nkind = 'taker'\nmarket = 'SOL-PERP'\nspeed = 1\n",
         "participant 1 \\(taker\\)"),
        ("[oracle.SOL-PERP\n", "not valid TOML"),
    ],
)
def test_bad_scenarios_are_named_errors(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ScenarioError, match=message):
        simulate(load_scenario(str(path)), duration_s=1)


def test_unknown_scenario_names_the_bundled_ones():
    with pytest.raises(ScenarioError, match="flash-crash"):
        load_scenario("moon")


def test_simulate_command_prints_the_summary_and_writes_the_report(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "--scenario", "flash-crash", "--duration", "25",
                                       "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "liquidations by mode" in result.output and "invariants                  hold" in result.output
    assert (tmp_path / "r" / "report.html").exists()
    listed = CliRunner().invoke(main, ["simulate", "--list"])
    assert all(name in listed.output for name in scenario_names())
    bad = CliRunner().invoke(main, ["simulate", "--scenario", "moon"])
    assert bad.exit_code == 2 and "no scenario 'moon'" in bad.output


def test_one_scenario_on_both_venue_profiles_side_by_side(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "--scenario", "funding-squeeze", "--duration", "30",
                                       "--venue", "hyperliquid", "--venue", "binance",
                                       "--report", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    hyperliquid = json.loads((tmp_path / "cmp/hyperliquid/summary.json").read_text())
    binance = json.loads((tmp_path / "cmp/binance/summary.json").read_text())
    assert (hyperliquid["venue"], binance["venue"]) == ("hyperliquid", "binance")
    assert hyperliquid["invariants"] == binance["invariants"] == "hold"
    assert hyperliquid["funding_payments"] == binance["funding_payments"] > 0  # the scenario's 10 s interval
    # each payment is the 8-hour rate's share: an eighth on Hyperliquid, all of it on Binance
    # (capped at 0.375% for SOL there); the crowded longs pay several times more on Binance
    assert binance["funding_paid"] > 3 * hyperliquid["funding_paid"] > 0
    table = result.output[result.output.rindex("hyperliquid"):]
    assert "binance" in table.splitlines()[0] and "funding paid" in table


def test_the_makers_keep_the_mark_within_a_fraction_of_a_percent_of_the_index():
    """A venue's basis: in a calm market the mark stays near the index, and the summary says
    how near (computed here from the samples themselves)."""
    from services.sim.report import summarize

    for name, mean_limit, max_limit in (("calm", 0.1, 0.5), ("trending", 0.2, 0.6), ("flash-crash", 0.3, 1.0)):
        result = simulate(load_scenario(name), duration_s=60)
        gaps = [abs(s.marks["SOL-PERP"] - s.index["SOL-PERP"]) / s.index["SOL-PERP"] for s in result.samples
                if s.marks["SOL-PERP"]]
        assert 100 * sum(gaps) / len(gaps) < mean_limit and 100 * max(gaps) < max_limit, name
        basis = summarize(result)["basis"]["SOL-PERP"]
        assert basis["max_pct"] == round(100 * max(gaps), 3)
