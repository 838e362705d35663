"""The strategy interface: callbacks, orders, a failing strategy, and loading errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from schemas.enums import Side
from services.cli import main
from services.sim.simulation import load_scenario, simulate
from services.sim.strategy import Strategy, StrategyError, load_strategy

ROOT = Path(__file__).resolve().parent.parent


class Recorder(Strategy):
    """Counts callbacks and buys 1 SOL at market on every 20th mark."""

    deposit = "10000"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.marks = 0

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def on_start(self, ctx) -> None:
        self._count("start")

    async def on_mark(self, ctx, market, mark, index) -> None:
        self._count("mark")
        self.marks += 1
        if self.marks % 20 == 0:
            await ctx.buy(market, "1")

    async def on_book(self, ctx, market, bid, ask) -> None:
        self._count("book")

    async def on_trade(self, ctx, market, price, size, taker_side) -> None:
        self._count("trade")

    async def on_fill(self, ctx, fill) -> None:
        self._count("fill")

    async def on_margin(self, ctx, snapshot) -> None:
        self._count("margin")


class Broken(Strategy):
    async def on_mark(self, ctx, market, mark, index) -> None:
        raise RuntimeError("strategy bug")


def test_a_strategy_gets_its_callbacks_and_its_orders_fill():
    strategy = Recorder()
    result = simulate(load_scenario("calm"), duration_s=20, strategy=strategy)
    assert strategy.calls["start"] == 1
    assert strategy.calls["mark"] == 81  # one mark per 250 ms tick over 20 s, t = 0 included
    assert strategy.calls["book"] > 0 and strategy.calls["trade"] > 0
    report = result.strategy.report()
    assert report["orders"] == 4 and report["fills"] >= 4 and strategy.calls["fill"] == report["fills"]
    assert strategy.calls["margin"] >= 4
    position = result.exchange.matching["SOL-PERP"].position("strategy")
    assert position == 400  # four market buys of 1 SOL (100 lots)
    assert report["fees_paid"] > 0 and report["errors"] == 0
    assert result.problems == []


def test_a_strategy_that_raises_is_reported_and_the_run_goes_on():
    result = simulate(load_scenario("calm"), duration_s=10, strategy=Broken())
    report = result.strategy.report()
    assert report["errors"] == 41 and "RuntimeError: strategy bug" in report["first_error"]
    assert len(result.samples) == 41 and len(result.fills) > 0  # the market carried on


class Protected(Strategy):
    """Buys 2 SOL at the first mark and protects it: a stop-limit 3% below (a limit 7%
    below: in a crash the book's bids can be gone for a moment, and a market order finds
    nothing to trade with, a resting limit the next bids), and a trailing stop on 1 SOL."""

    deposit = "2000"

    def __init__(self) -> None:
        self.stop_id = self.trailing_id = None
        self.orders: list = []

    async def on_mark(self, ctx, market, mark, index) -> None:
        if self.stop_id is None and ctx.position(market) == "0.00" and not ctx.open_orders(market):
            await ctx.buy(market, "2")
        elif self.stop_id is None and ctx.position(market) != "0.00":
            self.stop_id = await ctx.stop(market, Side.SELL, "2", f"{float(mark) * 0.97:.2f}",
                                          price=f"{float(mark) * 0.93:.2f}")
            self.trailing_id = await ctx.trailing_stop(market, Side.SELL, "1", "5")

    async def on_order(self, ctx, event) -> None:
        self.orders.append(event)


def test_a_strategys_stop_fires_in_a_flash_crash_and_it_hears_of_it():
    strategy = Protected()
    result = simulate(load_scenario("flash-crash"), duration_s=30, strategy=strategy)
    assert strategy.stop_id is not None and strategy.trailing_id is not None
    fired = [e for e in strategy.orders if type(e).__name__ == "OrderTriggered"]
    assert strategy.stop_id in {e.order_id for e in fired}
    assert result.exchange.matching["SOL-PERP"].position("strategy") == 0  # stopped out
    assert result.strategy.report()["liquidations"] == 0
    # the trailing stop was reduce-only: it fired with the other or waits with nothing to reduce
    assert all(e.account == "strategy" for e in strategy.orders)
    assert result.problems == []


def test_the_example_strategies_run(tmp_path):
    for spec, scenario in (("grid.py:GridMaker", "calm"), ("trend.py:TrendFollower", "trending")):
        result = CliRunner().invoke(main, ["run", "--strategy", str(ROOT / "examples/strategies" / spec),
                                           "--scenario", scenario, "--duration", "30",
                                           "--report", str(tmp_path / spec)])
        assert result.exit_code == 0, result.output
        assert "strategy orders / fills" in result.output and "strategy errors             0" in result.output
        assert (tmp_path / spec / "report.html").exists()


@pytest.mark.parametrize(
    ("content", "spec", "message"),
    [
        (None, "missing.py:X", "does not exist"),
        ("x = 1\n", "{path}", "expected path/to/file.py:ClassName"),
        ("from services.sim.strategy import Strategy\nclass A(Strategy): pass\n", "{path}:B", "no class 'B'.*A"),
        ("class A: pass\n", "{path}:A", "must subclass"),
        ("raise ImportError('nope')\n", "{path}:A", "failed to import: ImportError: nope"),
    ],
)
def test_loading_errors_say_what_was_expected(tmp_path, content, spec, message):
    path = tmp_path / "strategy.py"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StrategyError, match=message):
        load_strategy(spec.format(path=path))


def test_a_strategy_that_raises_makes_run_exit_non_zero_with_its_traceback(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("from services.sim.strategy import Strategy\n\n\nclass Broken(Strategy):\n"
                    "    async def on_mark(self, ctx, market, mark, index):\n"
                    "        raise RuntimeError('strategy bug')\n")
    result = CliRunner().invoke(main, ["run", "--strategy", f"{path}:Broken", "--scenario", "calm",
                                       "--duration", "5", "--report", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    assert "Traceback" in result.stderr and f'File "{path}", line 6, in on_mark' in result.stderr
    assert "RuntimeError: strategy bug" in result.stderr and "Broken raised" in result.stderr
    assert (tmp_path / "r" / "report.html").exists()  # reported all the same


def test_a_strategy_naming_a_market_the_run_cannot_trade_is_refused_at_start(tmp_path):
    path = tmp_path / "elsewhere.py"
    path.write_text("from services.sim.strategy import Strategy\n\n\nclass Elsewhere(Strategy):\n"
                    "    markets = ['XRP-PERP']\n\n\nclass Unpriced(Strategy):\n    markets = ['ETH-PERP']\n")
    result = CliRunner().invoke(main, ["run", "--strategy", f"{path}:Elsewhere", "--scenario", "calm"])
    assert result.exit_code == 2 and "XRP-PERP, not a market here" in result.output, result.output
    result = CliRunner().invoke(main, ["run", "--strategy", f"{path}:Unpriced", "--scenario", "calm"])
    assert result.exit_code == 2 and "scenario calm does not price" in result.output, result.output


def test_a_strategys_report_has_its_equity_trades_drawdown_and_ratios(tmp_path):
    import csv
    import json
    import statistics

    report = tmp_path / "trend"
    result = CliRunner().invoke(main, ["run", "--strategy", str(ROOT / "examples/strategies/trend.py:TrendFollower"),
                                       "--scenario", "trending", "--duration", "40", "--report", str(report)])
    assert result.exit_code == 0, result.output
    summary = json.loads((report / "summary.json").read_text())["strategy"]
    trades = list(csv.DictReader((report / "trades.csv").read_text().splitlines()))
    assert len(trades) == summary["fills"] > 0
    assert sum(float(t["fee_usdc"]) for t in trades) == pytest.approx(summary["fees_paid"], abs=1e-6)
    curve = [float(row["equity_usdc"]) for row in csv.DictReader((report / "equity.csv").read_text().splitlines())]
    assert curve[0] == 20_000 and curve[-1] == pytest.approx(20_000 + summary["pnl"], abs=1e-6)
    # the drawdown and the ratios, computed here from equity.csv
    peak, drawdown = curve[0], 0.0
    for value in curve:
        peak = max(peak, value)
        drawdown = max(drawdown, peak - value)
    assert summary["max_drawdown"] == pytest.approx(drawdown, abs=0.01)
    returns = [(b - a) / a for a, b in zip(curve, curve[1:])]
    sharpe = statistics.fmean(returns) / statistics.pstdev(returns) * len(returns) ** 0.5
    assert summary["sharpe_run"] == pytest.approx(sharpe, abs=0.001)
    assert (report / "strategy.png").stat().st_size > 20_000
    assert "strategy Sharpe / Sortino" in result.output and "max drawdown" in result.output
