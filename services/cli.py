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


if __name__ == "__main__":
    main()
