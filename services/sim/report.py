"""The report of a run: a summary table, plots as PNG, and one self-contained HTML page.

Files written to the report folder:
- ``summary.json`` and ``summary.txt``: throughput, latency percentiles, orders, fills,
  liquidations by mode and outcome, bad debt, insurance fund, rejections, invariants;
- ``marks.png``: mark and index per market, with liquidations marked by margin mode;
- ``insurance_fund.png``, ``pnl.png`` (participants' PnL by kind), ``latency.png``;
- ``report.html``: all of the above in one page, the plots embedded.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from exchange.core import money  # noqa: E402
from exchange.markets import trading_fee  # noqa: E402
from exchange.oracle import SECOND  # noqa: E402
from schemas.enums import Liquidity, Side  # noqa: E402
from services.sim.simulation import SimulationResult  # noqa: E402

MICRO = 1_000_000
REPORTS = Path("reports")


def run_folder(label: str, explicit: str | Path | None = None, root: Path = REPORTS) -> Path:
    """The folder a run writes into: ``explicit`` when given, else a new one under
    ``root`` named by the time it started and ``label`` (``20261202-0712-05-flash-crash-seed7``,
    ``-2`` appended should one of that name exist), with ``root/latest`` pointing at it."""
    if explicit is not None:
        folder = Path(explicit)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    root.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M-%S") + "-" + label
    folder, number = root / stem, 1
    while True:
        try:
            folder.mkdir()
            break
        except FileExistsError:
            number += 1
            folder = root / f"{stem}-{number}"
    latest = root / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(folder.name, target_is_directory=True)
    except OSError:  # no symbolic links here: the folder's name is printed anyway
        pass
    return folder




def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def _stops(result: SimulationResult) -> dict:
    """Accounts that put a stop under a position, how many of their stops fired, and how
    many of them were liquidated all the same (their position gapped through the stop, or
    a later position without one)."""
    holders, liquidated, fired, filled = set(), set(), set(), set()
    for event in result.exchange.log:
        kind = type(event).__name__
        if kind == "OrderAccepted" and event.condition:
            holders.add(event.account)
        elif kind == "OrderTriggered":
            fired.add(event.order_id)
        elif kind == "Fill" and event.taker_order_id in fired:
            filled.add(event.taker_order_id)
        elif kind == "LiquidationTrigger" and not event.update and event.account in holders:
            liquidated.add(event.account)
    return {"accounts_with_stops": len(holders), "fired": len(fired), "fired_and_traded": len(filled),
            "accounts_with_stops_liquidated": len(liquidated)}


def strategy_trades(result: SimulationResult, account: str = "strategy") -> list[dict]:
    """The strategy's fills, from its side: time, market, side, price, size, role, fee."""
    trades = []
    for fill in result.fills:
        if account not in (fill.taker_account, fill.maker_account):
            continue
        spec = result.exchange.markets[fill.market]
        taker = fill.taker_account == account
        side = fill.taker_side if taker else Side(-int(fill.taker_side))
        value = fill.price * fill.size * spec.value_per_tick_lot
        fee = 0 if fill.liquidity is not Liquidity.BOOK else \
            trading_fee(value, spec.taker_fee_ppm if taker else spec.maker_fee_ppm)
        trades.append({"seconds": fill.ts / SECOND, "market": fill.market, "side": side.name.lower(),
                       "price": spec.format_price(fill.price), "size": spec.format_size(fill.size),
                       "role": "taker" if taker else "maker", "fee": fee / MICRO,
                       "kind": fill.liquidity.name.lower(), "ticks": fill.price})
    return trades


def equity_curve(result: SimulationResult) -> list[tuple[float, float]]:
    """The strategy's equity (USDC) at every sample: deposit + PnL."""
    deposit = money(result.strategy.strategy.deposit)
    return [(sample.ts / SECOND, (deposit + sample.pnl.get("strategy", 0)) / MICRO) for sample in result.samples]


def performance(curve: list[tuple[float, float]]) -> dict:
    """Drawdown, and Sharpe and Sortino ratios on the run's clock: the mean return per
    sample interval over its deviation (all of it, or the losses only), times the square
    root of the run's number of intervals: the ratio of the whole run, not annualized."""
    values = [value for _, value in curve]
    peak, worst, worst_pct = values[0] if values else 0.0, 0.0, 0.0
    for value in values:
        peak = max(peak, value)
        worst = max(worst, peak - value)
        worst_pct = max(worst_pct, (peak - value) / peak if peak > 0 else 0.0)
    returns = [(b - a) / a for a, b in zip(values, values[1:], strict=False) if a > 0]
    sharpe = sortino = 0.0
    if len(returns) > 1:
        mean = statistics.fmean(returns)
        spread = statistics.pstdev(returns)
        downside = (sum(min(0.0, r) ** 2 for r in returns) / len(returns)) ** 0.5
        scale = len(returns) ** 0.5
        sharpe = mean / spread * scale if spread else 0.0
        sortino = mean / downside * scale if downside else 0.0
    return {"max_drawdown": round(worst, 2), "max_drawdown_pct": round(100 * worst_pct, 2),
            "sharpe_run": round(sharpe, 3), "sortino_run": round(sortino, 3),
            "return_pct": round(100 * (values[-1] - values[0]) / values[0], 3) if values and values[0] else 0.0}


def _basis(pairs: list[tuple[dict[str, int], dict[str, int]]]) -> dict:
    """Per market, the mark's distance from the index over the run: mean and max, in %."""
    gaps: dict[str, list[float]] = {}
    for marks, indexes in pairs:
        for market, mark in marks.items():
            index = indexes.get(market)
            if mark and index:
                gaps.setdefault(market, []).append(abs(mark - index) / index)
    return {market: {"mean_pct": round(100 * statistics.fmean(values), 3), "max_pct": round(100 * max(values), 3)}
            for market, values in sorted(gaps.items())}


def _basis_text(basis: dict) -> str:
    return ", ".join(f"{k} mean {v['mean_pct']:.2f}%, max {v['max_pct']:.2f}%" for k, v in basis.items()) or "no marks"


def summarize(result: SimulationResult) -> dict:
    simulated_s = result.samples[-1].ts / SECOND if result.samples else 0.0
    latencies_us = [value * 1e6 for value in result.latencies]
    by_mode: dict[str, int] = {}
    for trigger in result.liquidations:
        by_mode[trigger.mode.name.lower()] = by_mode.get(trigger.mode.name.lower(), 0) + 1
    by_outcome: dict[str, int] = {}
    for outcome in result.outcomes:
        key = f"{outcome.mode.name.lower()} {outcome.stage.name.lower()}"
        by_outcome[key] = by_outcome.get(key, 0) + 1
    fund = [sample.insurance_fund for sample in result.samples]
    return {
        "scenario": result.scenario.name,
        "venue": result.venue,
        "description": result.scenario.description,
        "seed": result.seed,
        "simulated_seconds": simulated_s,
        "wall_seconds": round(result.wall_s, 3),
        "orders": result.orders,
        "orders_per_simulated_second": round(result.orders / simulated_s, 1) if simulated_s else 0,
        "commands_per_wall_second": round(len(result.latencies) / result.wall_s, 1) if result.wall_s else 0,
        "fills": len(result.fills),
        "latency_us": {"p50": round(_percentile(latencies_us, 0.50), 1), "p90": round(_percentile(latencies_us, 0.90), 1),
                       "p99": round(_percentile(latencies_us, 0.99), 1),
                       "max": round(max(latencies_us), 1) if latencies_us else 0.0},
        "stops": _stops(result),
        "liquidations_by_mode": by_mode,
        "liquidation_outcomes": by_outcome,
        "bad_debt": result.exchange.risk.bad_debt / MICRO,
        "insurance_fund_start": fund[0] / MICRO if fund else 0,
        "insurance_fund_end": fund[-1] / MICRO if fund else 0,
        "funding_payments": len(result.funding_events),
        # what the paying side paid, over every account (the receivers got it less rounding)
        "funding_paid": sum(max(0, a.funding_paid) for a in result.exchange.risk.accounts.values()) / MICRO,
        "rejected": result.rejected,
        "pnl_by_kind": {kind: value / MICRO for kind, value in (result.samples[-1].pnl if result.samples else {}).items()},
        "basis": _basis([(s.marks, s.index) for s in result.samples]),
        "invariants": "hold" if not result.problems else result.problems[:5],
        **({"strategy": result.strategy.report() | performance(equity_curve(result))}
           if result.strategy is not None else {}),
    }


COMPARED = (
    ("liquidations isolated", lambda s: s["liquidations_by_mode"].get("isolated", 0)),
    ("liquidations cross", lambda s: s["liquidations_by_mode"].get("cross", 0)),
    ("backstops", lambda s: sum(v for k, v in s["liquidation_outcomes"].items() if k.endswith("backstop"))),
    ("ADL", lambda s: sum(v for k, v in s["liquidation_outcomes"].items() if k.endswith("adl"))),
    ("bad debt", lambda s: f"{s['bad_debt']:,.2f}"),
    ("insurance fund at the end", lambda s: f"{s['insurance_fund_end']:,.2f}"),
    ("funding payments", lambda s: s["funding_payments"]),
    ("funding paid", lambda s: f"{s['funding_paid']:,.2f}"),
    ("stops fired", lambda s: s["stops"]["fired"]),
    ("fills", lambda s: f"{s['fills']:,}"),
    ("invariants", lambda s: s["invariants"] if isinstance(s["invariants"], str) else "VIOLATED"),
)


def comparison_text(summaries: list[dict]) -> str:
    """Summaries of one scenario and seed on different venue profiles, side by side."""
    header = ["", *(s["venue"] for s in summaries)]
    rows = [header] + [[name, *(str(value(s)) for s in summaries)] for name, value in COMPARED]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)) for row in rows)


def summary_text(summary: dict) -> str:
    rows = [
        ("scenario", f"{summary['scenario']} (seed {summary['seed']}, venue {summary.get('venue', 'hyperliquid')})"),
        ("simulated / wall time", f"{summary['simulated_seconds']:.1f} s / {summary['wall_seconds']:.2f} s"),
        ("orders", f"{summary['orders']:,} ({summary['orders_per_simulated_second']:,.0f}/s simulated)"),
        ("fills", f"{summary['fills']:,}"),
        ("engine latency per command", "p50 {p50} µs, p90 {p90} µs, p99 {p99} µs, max {max} µs".format(**summary["latency_us"])),
        ("stops", "{fired} fired, {fired_and_traded} of them traded (the rest found no bid or ask inside the "
                  "band); {accounts_with_stops} accounts used them, {accounts_with_stops_liquidated} of those were "
                  "liquidated".format(**summary["stops"])),
        ("liquidations by mode", ", ".join(f"{k} {v}" for k, v in summary["liquidations_by_mode"].items()) or "none"),
        ("liquidation outcomes", ", ".join(f"{k} {v}" for k, v in sorted(summary["liquidation_outcomes"].items())) or "none"),
        ("bad debt", f"{summary['bad_debt']:,.2f}"),
        ("insurance fund", f"{summary['insurance_fund_start']:,.2f} -> {summary['insurance_fund_end']:,.2f}"),
        ("funding payments", f"{summary['funding_payments']} ({summary['funding_paid']:,.2f} paid)"),
        ("PnL by participant kind", ", ".join(f"{k} {v:,.2f}" for k, v in summary["pnl_by_kind"].items())),
        ("basis, mark vs index", _basis_text(summary.get("basis", {}))),
        ("rejected orders", ", ".join(f"{k} {v}" for k, v in summary["rejected"].items()) or "none"),
        ("invariants", summary["invariants"] if isinstance(summary["invariants"], str) else "VIOLATED"),
    ]
    strategy = summary.get("strategy")
    if strategy:
        rows += [
            ("strategy PnL", f"{strategy['pnl']:,.2f} (fees {strategy['fees_paid']:,.2f}, funding {strategy['funding_paid']:,.2f})"),
            ("strategy return / drawdown", f"{strategy['return_pct']:+.2f}%, max drawdown {strategy['max_drawdown']:,.2f} "
                                           f"({strategy['max_drawdown_pct']:.2f}%)"),
            ("strategy Sharpe / Sortino", f"{strategy['sharpe_run']:.2f} / {strategy['sortino_run']:.2f} (over the run, "
                                          "not annualized)"),
            ("strategy orders / fills", f"{strategy['orders']} / {strategy['fills']} ({strategy['rejected']} refused)"),
            ("strategy liquidations", str(strategy["liquidations"])),
            ("strategy latency", "p50 {p50} µs, p99 {p99} µs".format(**strategy["latency_us"])),
            ("strategy errors", f"{strategy['errors']}" + (f" (first: {strategy['first_error']})" if strategy["errors"] else "")),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _plot_marks(result: SimulationResult, path: Path) -> None:
    markets = sorted(result.samples[0].marks) if result.samples else []
    figure, axes = plt.subplots(len(markets) or 1, 1, figsize=(10, 3.2 * max(1, len(markets))), squeeze=False)
    seconds = [sample.ts / SECOND for sample in result.samples]
    for axis, market in zip(axes[:, 0], markets, strict=False):
        tick = float(result.exchange.markets[market].tick_size)
        axis.plot(seconds, [s.marks[market] * tick for s in result.samples], label="mark", linewidth=1.4)
        axis.plot(seconds, [s.index[market] * tick for s in result.samples], label="index", linewidth=0.9, alpha=0.7)
        for mode, colour in (("ISOLATED", "tab:red"), ("CROSS", "tab:purple")):
            points = [(t.ts / SECOND, p.mark_price * tick) for t in result.liquidations if t.mode.name == mode
                      for p in t.positions if p.market == market]
            if points:
                axis.scatter(*zip(*points, strict=True), s=18, color=colour, label=f"liquidated ({mode.lower()})",
                             zorder=3)
        if result.strategy is not None:  # the strategy's own fills
            for side, marker, colour in (("buy", "^", "tab:green"), ("sell", "v", "tab:orange")):
                points = [(t["seconds"], t["ticks"] * tick) for t in strategy_trades(result)
                          if t["market"] == market and t["side"] == side]
                if points:
                    axis.scatter(*zip(*points, strict=True), marker=marker, s=36, color=colour, zorder=4,
                                 label=f"strategy {side}")
        axis.set_title(f"{market}: mark price and liquidations")
        axis.set_xlabel("seconds")
        axis.legend(loc="best", fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_series(seconds: list[float], series: dict[str, list[float]], title: str, ylabel: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(10, 3.2))
    for label, values in series.items():
        axis.plot(seconds, values, label=label)
    axis.set_title(title)
    axis.set_xlabel("seconds")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    if len(series) > 1:
        axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_latency(result: SimulationResult, path: Path) -> None:
    _latency_histogram([value * 1e6 for value in result.latencies], "µs", "engine latency per command (in-process)",
                       "commands (log scale)", path)


def _latency_histogram(values: list[float], unit: str, title: str, ylabel: str, path: Path) -> None:
    """A log-scale histogram with its p50 and p99 marked."""
    figure, axis = plt.subplots(figsize=(10, 3.2))
    values = values or [0.0]
    axis.hist(values, bins=60, color="tab:blue")
    axis.set_yscale("log")
    for fraction, style in ((.5, "--"), (.99, ":")):
        value = _percentile(values, fraction)
        axis.axvline(value, color="black", linestyle=style, linewidth=1, label=f"p{int(fraction * 100)} {value:.1f} {unit}")
    axis.set_title(title)
    axis.set_xlabel(unit)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(result: SimulationResult, directory: str | Path) -> dict[str, Path]:
    """Write the report files into ``directory`` (created if needed); returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    paths = {name: directory / name for name in ("summary.json", "summary.txt", "marks.png", "insurance_fund.png",
                                                   "pnl.png", "latency.png", "report.html")}
    paths["summary.json"].write_text(json.dumps(summary, indent=2))
    text = summary_text(summary)
    paths["summary.txt"].write_text(text + "\n")
    seconds = [sample.ts / SECOND for sample in result.samples]
    _plot_marks(result, paths["marks.png"])
    _plot_series(seconds, {"insurance fund": [s.insurance_fund / MICRO for s in result.samples]},
                 "insurance fund", "quote units", paths["insurance_fund.png"])
    kinds = sorted(result.samples[-1].pnl) if result.samples else []
    _plot_series(seconds, {kind: [s.pnl.get(kind, 0) / MICRO for s in result.samples] for kind in kinds},
                 "PnL by participant kind (equity − deposits)", "quote units", paths["pnl.png"])
    _plot_latency(result, paths["latency.png"])
    images = [("marks.png", "Mark price and liquidations", paths["marks.png"])]
    if result.strategy is not None:
        paths.update({name: directory / name for name in ("strategy.png", "equity.csv", "trades.csv")})
        curve = equity_curve(result)
        _write_csv(paths["equity.csv"], ["seconds", "equity_usdc"], [(f"{t:.3f}", f"{v:.6f}") for t, v in curve])
        trades = strategy_trades(result)
        _write_csv(paths["trades.csv"], ["seconds", "market", "side", "price", "size", "role", "fee_usdc", "kind"],
                   [(f"{t['seconds']:.3f}", t["market"], t["side"], t["price"], t["size"], t["role"],
                     f"{t['fee']:.6f}", t["kind"]) for t in trades])
        _plot_equity(curve, paths["strategy.png"])
        images.append(("strategy.png", "The strategy's equity and drawdown", paths["strategy.png"]))
    images += [("insurance_fund.png", "Insurance fund", paths["insurance_fund.png"]),
               ("pnl.png", "PnL by participant kind", paths["pnl.png"]),
               ("latency.png", "Latency", paths["latency.png"])]
    paths["report.html"].write_text(_html_page(summary["scenario"], summary["description"], text, images))
    return paths


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def _plot_equity(curve: list[tuple[float, float]], path: Path) -> None:
    seconds = [t for t, _ in curve]
    values = [v for _, v in curve]
    peaks = []
    for value in values:
        peaks.append(max(value, peaks[-1]) if peaks else value)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4.6), sharex=True, height_ratios=[2, 1])
    top.plot(seconds, values, color="tab:blue", label="equity")
    top.set_ylabel("USDC")
    top.set_title("strategy equity (balance + margins + unrealized PnL)")
    top.grid(alpha=0.3)
    bottom.fill_between(seconds, [v - p for v, p in zip(values, peaks, strict=True)], 0, color="tab:red", alpha=0.5)
    bottom.set_ylabel("drawdown, USDC")
    bottom.set_xlabel("seconds")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def summarize_live(market, stats, venue: str = "hyperliquid") -> dict:
    """The summary of a live run (`perpsim up`), in plain units: what the participants'
    clients saw."""
    latencies_ms = [value * 1e3 for value in stats.latencies]
    elapsed = stats.series[-1][0] if stats.series else 0.0
    modes: dict[str, int] = {}
    for _, _, mode, _, _ in stats.liquidations:
        modes[mode.lower()] = modes.get(mode.lower(), 0) + 1
    fund = [row[2] for row in stats.series]
    basis = _basis([({m: row[1].get(m, 0) for m in market.scenario.oracle}, row[4]) for row in stats.series])
    return {
        "scenario": market.scenario.name, "venue": venue, "seed": market.seed, "seconds": round(elapsed, 1),
        "run": "interrupted (partial report)" if stats.interrupted else "complete",
        "orders": stats.orders, "orders_per_second": round(stats.orders / elapsed, 1) if elapsed else 0,
        "fills": stats.fills, "fills_per_second": round(stats.fills / elapsed, 1) if elapsed else 0,
        "refused": stats.rejected,
        "latency_ms": {name: round(_percentile(latencies_ms, f), 2) for name, f in
                       (("p50", .5), ("p90", .9), ("p99", .99))} | {"max": round(max(latencies_ms), 2) if latencies_ms else 0},
        "stops_fired": stats.stops_fired,
        "liquidations_by_mode": modes, "liquidation_outcomes": dict(sorted(stats.outcomes.items())),
        "insurance_fund_start": fund[0] / MICRO if fund else 0, "insurance_fund_end": fund[-1] / MICRO if fund else 0,
        "funding_payments": market.view.funding_payments, "funding_paid": market.view.funding_paid / MICRO,
        "fees": stats.fees / MICRO,
        "pnl_by_kind": {kind: value / MICRO for kind, value in (stats.series[-1][5] if stats.series else {}).items()},
        "basis": basis,
        "held_ticks": stats.held_ticks,
        "invariants": stats.problems or (f"not checked: {stats.unchecked}" if stats.unchecked else "hold"),
    }


def live_summary_text(summary: dict) -> str:
    latency = summary["latency_ms"]
    rows = [
        ("scenario", f"{summary['scenario']} (seed {summary['seed']}, venue {summary['venue']}), live on the services"),
        ("run", f"{summary['run']}, {summary['seconds']:.0f} s"),
        ("orders", f"{summary['orders']:,} ({summary['orders_per_second']:,.0f}/s), {summary['refused']:,} refused"),
        ("fills", f"{summary['fills']:,} ({summary['fills_per_second']:,.0f}/s)"),
        ("latency, submit to acceptance", f"p50 {latency['p50']:.1f} ms, p90 {latency['p90']:.1f} ms, "
                                          f"p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms"),
        ("stops fired", f"{summary['stops_fired']:,}"),
        ("liquidations by mode", ", ".join(f"{k} {v}" for k, v in summary["liquidations_by_mode"].items()) or "none"),
        ("liquidation outcomes", ", ".join(f"{k} {v}" for k, v in summary["liquidation_outcomes"].items()) or "none"),
        ("insurance fund", f"{summary['insurance_fund_start']:,.2f} -> {summary['insurance_fund_end']:,.2f}"),
        ("funding payments", f"{summary['funding_payments']:,} ({summary['funding_paid']:,.2f} paid)"),
        ("trading fees", f"{summary['fees']:,.2f}"),
        ("PnL by participant kind", ", ".join(f"{k} {v:,.2f}" for k, v in summary["pnl_by_kind"].items()) or "none"),
        ("basis, mark vs index", _basis_text(summary["basis"])),
        ("backpressure", f"the participants waited {summary['held_ticks']:,} ticks for the venue"
                         if summary["held_ticks"] else "none: the venue kept up"),
        ("invariants", summary["invariants"] if isinstance(summary["invariants"], str)
         else "VIOLATED: " + "; ".join(summary["invariants"])),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _html_page(title: str, description: str, text: str, images: list[tuple[str, str, Path]],
               links: list[tuple[str, str]] = ()) -> str:
    """One self-contained page: the summary as a table, the plots embedded, links."""
    rows = "".join(f"<tr><th>{html.escape(line.split('  ', 1)[0])}</th><td>{html.escape(line.split('  ', 1)[1].strip())}"
                   "</td></tr>" for line in text.splitlines() if "  " in line)
    pictures = "".join(f'<h2>{html.escape(heading)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,'
                       f'{base64.b64encode(path.read_bytes()).decode()}">' for name, heading, path in images)
    linked = "".join(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for label, href in links)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>perpsim report: "
            f"{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;}}"
            "th{text-align:left;padding-right:2em;vertical-align:top}img{max-width:100%}</style></head><body>"
            f"<h1>perpsim: {html.escape(title)}</h1><p>{html.escape(description)}</p>"
            f"<table>{rows}</table>{pictures}" + (f"<h2>Logs</h2><ul>{linked}</ul>" if linked else "")
            + "</body></html>")


def _plot_live_marks(market, stats, path: Path) -> None:
    symbols = sorted(market.scenario.oracle)
    figure, axes = plt.subplots(len(symbols) or 1, 1, figsize=(10, 3.2 * max(1, len(symbols))), squeeze=False)
    seconds = [row[0] for row in stats.series]
    for axis, symbol in zip(axes[:, 0], symbols, strict=False):
        tick = float(market.markets[symbol].tick_size)
        # no mark yet: a gap, not a fall to 0
        axis.plot(seconds, [row[1][symbol] * tick if row[1].get(symbol) else float("nan") for row in stats.series],
                  label="mark", linewidth=1.4)
        axis.plot(seconds, [row[4][symbol] * tick if row[4].get(symbol) else float("nan") for row in stats.series],
                  label="index", linewidth=0.9, alpha=0.7)
        for mode, colour in (("ISOLATED", "tab:red"), ("CROSS", "tab:purple")):
            points = [(t, mark * tick) for t, _, m, sym, mark in stats.liquidations if m == mode and sym == symbol and mark]
            if points:
                axis.scatter(*zip(*points, strict=True), s=18, color=colour, label=f"liquidated ({mode.lower()})",
                             zorder=3)
        axis.set_title(f"{symbol}: mark, index and liquidations")
        axis.set_xlabel("seconds since the market started")
        axis.set_ylabel("price")
        axis.legend(loc="best", fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_live_report(market, stats, directory: str | Path, venue: str = "hyperliquid") -> dict[str, Path]:
    """The report of a live run (`perpsim up`), in ``directory`` (its run folder; the
    services' logs, if there, are linked)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = summarize_live(market, stats, venue)
    paths = {name: directory / name for name in ("summary.json", "summary.txt", "marks.png", "pnl.png",
                                                   "insurance_fund.png", "latency.png", "report.html")}
    paths["summary.json"].write_text(json.dumps(summary, indent=2))
    text = live_summary_text(summary)
    paths["summary.txt"].write_text(text + "\n")
    seconds = [row[0] for row in stats.series]
    _plot_live_marks(market, stats, paths["marks.png"])
    kinds = sorted(stats.series[-1][5]) if stats.series else []
    _plot_series(seconds, {kind: [row[5].get(kind, 0) / MICRO for row in stats.series] for kind in kinds},
                 "PnL by participant kind (equity − deposits)", "USDC", paths["pnl.png"])
    _plot_series(seconds, {"insurance fund": [row[2] / MICRO for row in stats.series]}, "insurance fund",
                 "USDC", paths["insurance_fund.png"])
    _latency_histogram([value * 1e3 for value in stats.latencies], "ms", "latency, submit to acceptance",
                       "orders (log scale)", paths["latency.png"])
    logs = directory / "logs"
    links = [(path.name, f"logs/{path.name}") for path in sorted(logs.glob("*.log"))] if logs.is_dir() else []
    paths["report.html"].write_text(_html_page(
        f"live {market.scenario.name}", market.scenario.description, text,
        [("marks.png", "Mark, index and liquidations", paths["marks.png"]),
         ("pnl.png", "PnL by participant kind", paths["pnl.png"]),
         ("insurance_fund.png", "Insurance fund", paths["insurance_fund.png"]),
         ("latency.png", "Latency", paths["latency.png"])], links))
    return paths


def write_live_strategy_report(runner, directory: str | Path) -> dict[str, Path]:
    """The report of a strategy run against a live venue (`perpsim run --bootstrap`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result = runner.result
    curve = [(t, value / MICRO) for t, value in result.equity if value]
    summary = {"strategy": type(result.strategy).__name__, "account": result.account, "seconds": round(result.seconds, 1),
               "run": "interrupted" if result.interrupted else "complete",
               **runner.report(), **(performance(curve) if curve else {})}
    names = ("summary.json", "summary.txt", "equity.csv", "trades.csv", "strategy.png", "marks.png", "report.html")
    paths = {name: directory / name for name in names}
    paths["summary.json"].write_text(json.dumps(summary, indent=2))
    latency = summary["latency_ms"]
    rows = [
        ("strategy", f"{summary['strategy']} as account {summary['account']}, live on the venue"),
        ("run", f"{summary['run']}, {summary['seconds']:.0f} s"),
        ("PnL", f"{summary['pnl']:,.2f} (fees {summary['fees_paid']:,.2f}, funding {summary['funding_paid']:,.2f})"),
        ("return / drawdown", f"{summary.get('return_pct', 0):+.2f}%, max drawdown {summary.get('max_drawdown', 0):,.2f}"
                              f" ({summary.get('max_drawdown_pct', 0):.2f}%)"),
        ("Sharpe / Sortino", f"{summary.get('sharpe_run', 0):.2f} / {summary.get('sortino_run', 0):.2f} "
                             "(over the run, not annualized)"),
        ("orders / fills", f"{summary['orders']} / {summary['fills']} ({summary['rejected']} refused)"),
        ("latency, placing", f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms"),
        ("liquidations", str(summary["liquidations"])),
        ("errors", f"{summary['errors']}" + (f" (first: {summary['first_error']})" if summary["errors"] else "")),
    ]
    width = max(len(name) for name, _ in rows)
    text = "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    paths["summary.txt"].write_text(text + "\n")
    _write_csv(paths["equity.csv"], ["seconds", "equity_usdc"], [(f"{t:.3f}", f"{v:.6f}") for t, v in curve])
    trade_rows = []
    for seconds, fill in result.fills:
        spec = result.markets[fill.market]
        taker = fill.taker_account == result.account
        side = fill.taker_side if taker else Side(-int(fill.taker_side))
        trade_rows.append((f"{seconds:.3f}", fill.market, side.name.lower(), spec.format_price(fill.price),
                           spec.format_size(fill.size), "taker" if taker else "maker", fill.liquidity.name.lower()))
    _write_csv(paths["trades.csv"], ["seconds", "market", "side", "price", "size", "role", "kind"], trade_rows)
    _plot_equity(curve or [(0.0, 0.0)], paths["strategy.png"])
    figure, axis = plt.subplots(figsize=(10, 3.2))
    for market, points in sorted(result.marks.items()):
        tick = float(result.markets[market].tick_size)
        axis.plot([t for t, _ in points], [p * tick for _, p in points], label=f"{market} mark", linewidth=1.2)
        for side, marker, colour in (("buy", "^", "tab:green"), ("sell", "v", "tab:orange")):
            marked = [(float(r[0]), float(r[3])) for r in trade_rows if r[1] == market and r[2] == side]
            if marked:
                axis.scatter(*zip(*marked, strict=True), marker=marker, s=36, color=colour, zorder=3,
                             label=f"strategy {side}")
    axis.set_title("marks and the strategy's fills")
    axis.set_xlabel("seconds")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(paths["marks.png"], dpi=110)
    plt.close(figure)
    paths["report.html"].write_text(_html_page(
        f"{summary['strategy']} live", "A strategy run against a running venue.", text,
        [("marks.png", "Marks and the strategy's fills", paths["marks.png"]),
         ("strategy.png", "Equity and drawdown", paths["strategy.png"])]))
    return paths
