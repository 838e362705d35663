"""`perpsim sweep`: one scenario in-process over many seeds (and strategy parameters), on
every core, with a table and a plot across the runs.

Each run is ``simulate`` in a worker process (``concurrent.futures``, one per core by
default); a run's summary is what ``perpsim simulate`` or ``run`` reports for it.
"""

from __future__ import annotations

import html
import itertools
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SweepError(ValueError):
    """A sweep's seeds or parameters could not be read."""


def parse_seeds(text: str) -> list[int]:
    """``1..20``, ``3,5,8`` or a mix (``1..4,10``)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if ".." in part:
                first, last = (int(value) for value in part.split("..", 1))
                if last < first:
                    raise SweepError(f"seeds {part!r}: {last} is before {first}")
                seeds.extend(range(first, last + 1))
            elif part.strip():
                seeds.append(int(part))
    except ValueError:
        raise SweepError(f"seeds {text!r}: expected e.g. 1..20 or 3,5,8") from None
    if not seeds:
        raise SweepError("no seeds")
    return list(dict.fromkeys(seeds))


def parse_params(specs: tuple[str, ...], strategy: Any) -> list[dict[str, Any]]:
    """``name=v1,v2`` each, against the strategy's attributes (converted to their type):
    the cartesian product, or one empty set."""
    axes: list[tuple[str, list]] = []
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip()
        if not values or not name:
            raise SweepError(f"--set {spec!r}: expected NAME=VALUE[,VALUE...]")
        if strategy is None or not hasattr(strategy, name):
            raise SweepError(f"--set {name}: the strategy has no attribute {name!r}")
        kind = type(getattr(strategy, name))
        try:
            axes.append((name, [kind(value.strip()) for value in values.split(",")]))
        except ValueError:
            raise SweepError(f"--set {spec!r}: the values must be {kind.__name__}s") from None
    return [dict(zip([n for n, _ in axes], combo, strict=True)) for combo in
            itertools.product(*[v for _, v in axes])] or [{}]


@dataclass
class Job:
    scenario: str
    seed: int
    duration: float | None
    venue: str
    strategy: str | None = None  # FILE.py:Class
    params: dict = field(default_factory=dict)


def run_job(job: Job) -> dict:
    """One run, in a worker: its summary (the figures `perpsim simulate` prints)."""
    from services.sim.report import summarize
    from services.sim.simulation import load_scenario, simulate
    from services.sim.strategy import load_strategy

    strategy = None
    if job.strategy:
        strategy = load_strategy(job.strategy)
        for name, value in job.params.items():
            setattr(strategy, name, value)
    result = simulate(load_scenario(job.scenario), seed=job.seed, duration_s=job.duration, strategy=strategy,
                      venue=job.venue)
    summary = summarize(result)
    summary["params"] = job.params
    return summary


def sweep(jobs: list[Job], workers: int, on_done=None) -> list[dict]:
    """Every job's summary, in the jobs' order."""
    results: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_job, job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done is not None:
                on_done(results[futures[future]])
    return [results[index] for index in range(len(jobs))]


COLUMNS = (
    ("seed", lambda s: s["seed"]),
    ("fills", lambda s: s["fills"]),
    ("liq. isolated", lambda s: s["liquidations_by_mode"].get("isolated", 0)),
    ("liq. cross", lambda s: s["liquidations_by_mode"].get("cross", 0)),
    ("bad debt", lambda s: round(s["bad_debt"], 2)),
    ("fund at end", lambda s: round(s["insurance_fund_end"], 2)),
)
STRATEGY_COLUMNS = (
    ("strategy PnL", lambda s: round(s["strategy"]["pnl"], 2)),
    ("max drawdown", lambda s: round(s["strategy"]["max_drawdown"], 2)),
    ("Sharpe", lambda s: s["strategy"]["sharpe_run"]),
    ("fills (strategy)", lambda s: s["strategy"]["fills"]),
)


def table(summaries: list[dict]) -> tuple[list[str], list[list]]:
    columns = list(COLUMNS) + (list(STRATEGY_COLUMNS) if summaries and "strategy" in summaries[0] else [])
    names = [name for name, _ in columns]
    if any(s["params"] for s in summaries):
        names.insert(1, "params")
    rows = []
    for s in summaries:
        row = [value(s) for _, value in columns]
        if "params" in names:
            row.insert(1, ", ".join(f"{k}={v}" for k, v in s["params"].items()))
        rows.append(row)
    return names, rows


def table_text(summaries: list[dict]) -> str:
    names, rows = table(summaries)
    numeric = [i for i, name in enumerate(names) if name not in ("params",) and all(
        isinstance(row[i], (int, float)) for row in rows)]
    lines = [[str(cell) for cell in row] for row in rows]
    for label, pick in (("mean", statistics.fmean), ("min", min), ("max", max)):
        lines.append([label if i == 0 else (f"{pick([row[i] for row in rows]):.2f}" if i in numeric and i else "")
                      for i in range(len(names))])
    widths = [max(len(str(x)) for x in [name] + [line[i] for line in lines]) for i, name in enumerate(names)]
    out = ["  ".join(name.rjust(widths[i]) for i, name in enumerate(names))]
    out += ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(line)) for line in lines]
    return "\n".join(out)


def write_sweep_report(summaries: list[dict], directory: Path, title: str) -> dict[str, Path]:
    import csv
    import json

    from services.sim.report import _html_page, plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("sweep.csv", "sweep.json", "sweep.txt", "sweep.png", "report.html")}
    names, rows = table(summaries)
    with paths["sweep.csv"].open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        writer.writerows(rows)
    paths["sweep.json"].write_text(json.dumps(summaries, indent=2))
    text = table_text(summaries)
    paths["sweep.txt"].write_text(text + "\n")
    strategy = "strategy" in summaries[0]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    labels = [str(s["seed"]) + (" " + ",".join(str(v) for v in s["params"].values()) if s["params"] else "")
              for s in summaries]
    first = [s["strategy"]["pnl"] for s in summaries] if strategy else \
        [s["liquidations_by_mode"].get("isolated", 0) + s["liquidations_by_mode"].get("cross", 0) for s in summaries]
    axes[0].bar(range(len(first)), first, color=["tab:green" if v >= 0 else "tab:red" for v in first]
                if strategy else "tab:blue")
    axes[0].set_xticks(range(len(first)), labels, rotation=90, fontsize=7)
    axes[0].set_title("strategy PnL by run" if strategy else "liquidations by run")
    axes[0].set_ylabel("USDC" if strategy else "buckets")
    second = [s["insurance_fund_end"] for s in summaries]
    axes[1].hist(second, bins=min(20, max(3, len(second))), color="tab:purple")
    axes[1].set_title("insurance fund at the end, across runs")
    axes[1].set_xlabel("USDC")
    axes[1].set_ylabel("runs")
    figure.tight_layout()
    figure.savefig(paths["sweep.png"], dpi=110)
    plt.close(figure)
    page = _html_page(title, f"{len(summaries)} runs", "", [("sweep.png", "Across the runs", paths["sweep.png"])])
    paths["report.html"].write_text(page.replace("<table></table>", f"<pre>{html.escape(text)}</pre>", 1))
    return paths
