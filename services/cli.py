"""The ``perpsim`` command line."""

from __future__ import annotations

import click

from exchange.markets import MarketError, default_markets, load_markets


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="perpsim")
def main() -> None:
    """perpsim: an event-driven exchange simulator for perpetual futures.

    Order matching, price oracle, margin/risk (isolated or cross per position) and
    liquidation, as services exchanging events over Kafka. Run `perpsim COMMAND --help`
    for the options of a command.
    """


@main.command()
@click.option("--market", "symbol", default="BTC-PERP", show_default=True,
              help="Market to trade, e.g. BTC-PERP, ETH-PERP or SOL-PERP.")
@click.option("--markets-file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of market specs to use instead of the built-in BTC/ETH/SOL set.")
def demo(symbol: str, markets_file: str | None) -> None:
    """Run a scripted matching session and print its trades and book.

    Makers quote a ladder; takers send IOC, market, post-only, FOK and reduce-only
    orders; an order is amended and cancelled. Each step shows what the engine did.
    """
    from services.demo import run_demo

    try:
        markets = load_markets(markets_file) if markets_file else default_markets()
    except MarketError as exc:
        raise click.ClickException(str(exc)) from None
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
def scenario(name: str, shock: str | None, accounts: int, seed: int, seconds: int, verbose: bool) -> None:
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
                result = crash(accounts=accounts, seed=seed, seconds=seconds, **kwargs)
        else:
            result = (isolated_case if name == "isolated" else cross_case)(*([shock] if shock else []))
    except OracleError as exc:
        raise click.BadParameter(str(exc), param_hint="--shock") from None
    if name == "crash" and not verbose:
        click.echo(result.lines[0])
        click.echo(f"\n{'time':>8}  {'account':<8} {'mode':<9} {'outcome':<10} liquidated at mark")
        for when, account, mode, marks, stage in result.table:
            click.echo(f"{when:>8}  {account:<8} {mode:<9} {stage or 'pending':<10} {marks}")
        click.echo("")
        click.echo(result.lines[-1])
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


if __name__ == "__main__":
    main()
