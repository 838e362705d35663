"""`perpsim sweep`: many in-process runs on every core, tabled."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.sim.simulation import load_scenario, simulate
from services.sim.strategy import load_strategy
from services.sim.sweep import SweepError, parse_seeds

ROOT = Path(__file__).resolve().parent.parent
GRID = str(ROOT / "examples/strategies/grid.py:GridMaker")


def test_a_sweep_tables_every_seed_and_parameter_as_a_single_run_reports_it(tmp_path):
    result = CliRunner().invoke(main, ["sweep", "--scenario", "calm", "--seeds", "1..3", "--strategy", GRID,
                                       "--set", "levels=2,3", "--duration", "10", "--workers", "2",
                                       "--report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "sweep.csv").read_text().splitlines()))
    assert [(r["seed"], r["params"]) for r in rows] == [(str(s), f"levels={n}") for n in (2, 3) for s in (1, 2, 3)]
    # one of them, run here by itself: the same figures
    strategy = load_strategy(GRID)
    strategy.levels = 3
    alone = simulate(load_scenario("calm"), seed=2, duration_s=10, strategy=strategy)
    row = rows[4]
    assert int(row["fills"]) == len(alone.fills)
    assert float(row["strategy PnL"]) == pytest.approx(alone.strategy.report()["pnl"], abs=0.005)
    assert "mean" in result.output and (tmp_path / "sweep.png").stat().st_size > 10_000


def test_sweep_arguments_are_checked_at_once():
    assert parse_seeds("1..3,7") == [1, 2, 3, 7]
    for bad in ("3..1", "a..b", ""):
        with pytest.raises(SweepError):
            parse_seeds(bad)
    result = CliRunner().invoke(main, ["sweep", "--strategy", GRID, "--set", "nosuch=1,2"])
    assert result.exit_code == 2 and "has no attribute 'nosuch'" in result.output
    result = CliRunner().invoke(main, ["sweep", "--set", "levels=1"])
    assert result.exit_code == 2 and "give --strategy too" in result.output
