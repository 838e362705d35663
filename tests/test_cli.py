"""The command line as a user runs it."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from services.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_trades_and_book_consistent_with_the_script():
    result = CliRunner().invoke(main, ["demo", "--market", "SOL-PERP"])
    assert result.exit_code == 0, result.output
    trades = re.findall(r"^\s+\d+\s+(\w+)\s+(BUY|SELL)\s+([\d.]+)\s+([\d.]+)\s+(\w+)$", result.output, re.M)
    # the script: alice lifts 1.00 @ 150.10 and 1.50 @ 150.20; bob sells 1.00 @ 149.90, 0.50 @ 149.80;
    # alice's reduce-only sell takes carol's amended 0.40 @ 149.95
    assert trades == [
        ("alice", "BUY", "1.00", "150.10", "maker"),
        ("alice", "BUY", "1.50", "150.20", "maker"),
        ("bob", "SELL", "1.00", "149.90", "maker"),
        ("bob", "SELL", "0.50", "149.80", "maker"),
        ("alice", "SELL", "0.40", "149.95", "carol"),
    ]
    assert "WOULD_CROSS" in result.output and "FOK_NOT_FILLABLE" in result.output
    assert "SELF_TRADE" in result.output and "UNKNOWN_ORDER" in result.output
    assert "Positions: alice 2.10, bob -1.50, carol 0.40, maker -1.00" in result.output


def test_unknown_market_is_a_usage_error_naming_the_known_ones():
    result = CliRunner().invoke(main, ["demo", "--market", "XRP-PERP"])
    assert result.exit_code == 2
    assert "unknown market 'XRP-PERP'" in result.output and "BTC-PERP" in result.output


def test_broken_markets_file_is_reported_not_raised(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[BTC-PERP]\ntick_size = "0.1"\n')
    result = CliRunner().invoke(main, ["demo", "--markets-file", str(path)])
    assert result.exit_code == 1
    assert "missing field(s) lot_size, max_leverage" in result.output


def test_help_explains_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name, command in main.commands.items():
        assert name in result.output, name  # listed, with its summary
        assert command.help and len(command.help.split()) >= 4, name  # a sentence, not a word
        text = CliRunner().invoke(main, [name, "--help"])
        assert text.exit_code == 0 and command.help.split(".")[0].split()[0] in text.output, name
        for parameter in command.params:  # every option says what it is for
            if isinstance(parameter, click.Option) and not parameter.hidden and parameter.name != "help":
                assert parameter.help, f"{name} {parameter.opts[0]} has no help"


def test_ci_runs_exactly_the_test_command_the_readme_gives():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    commands = [line for block in blocks[:2] for line in block.splitlines() if line.strip()]
    assert len(commands) == 2, "the README's first screen gives exactly two commands"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci


def test_scenario_crash_prints_the_liquidations_and_the_insurance_fund():
    result = CliRunner().invoke(main, ["scenario", "crash", "--accounts", "30", "--seconds", "40"])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^\s+[\d.]+s\s+(t\d{3})\s+(isolated|cross)\s+(\w+)\s+SOL-PERP ([\d.]+)$", result.output, re.M)
    assert rows, result.output
    summary = re.search(r"(\d+) buckets liquidated \((\d+) isolated, (\d+) cross\).*insurance fund ([\d,.]+)",
                        result.output)
    assert summary and int(summary.group(1)) == len(rows)
    assert int(summary.group(2)) == sum(1 for r in rows if r[1] == "isolated")


def test_scenario_crash_with_a_gap_says_it_ended_in_adl_without_verbose():
    """The README: `--shock '-30% at 10s'` makes it a gap that exhausts the fund and ends in ADL."""
    from exchange.scenarios import crash
    from schemas.enums import Liquidity
    from schemas.events import Fill

    result = CliRunner().invoke(main, ["scenario", "crash", "--shock", "-30% at 10s"])
    assert result.exit_code == 0, result.output
    adl = [e for e in crash(shock="-30% at 10s").exchange.log if isinstance(e, Fill) and e.liquidity is Liquidity.ADL]
    assert adl  # the same run, counted from its fills
    assert f"ADL closed positions of {len({f.taker_account for f in adl})} profitable account(s)" in result.output
    assert "no ADL" in CliRunner().invoke(main, ["scenario", "crash", "--accounts", "30", "--seconds", "40"]).output


def test_the_readmes_demo_with_its_markets_file_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "markets.toml").write_text(readme.split("Your own markets go in a TOML file", 1)[1]
                                           .split("```toml\n", 1)[1].split("```", 1)[0])
    result = CliRunner().invoke(main, ["demo", "--markets-file", str(tmp_path / "markets.toml")])
    assert result.exit_code == 0, result.output
    assert "Book DOGE-PERP" in result.output


def test_scenario_isolated_shows_liquidation_price_loss_and_balance():
    result = CliRunner().invoke(main, ["scenario", "isolated", "--shock", "-30% at 10s"])
    assert result.exit_code == 0, result.output
    assert "liquidation price 123.08" in result.output
    assert "final balance 1,699.25, loss 300.75" in result.output


def test_scenario_with_an_unreadable_shock_is_a_usage_error():
    result = CliRunner().invoke(main, ["scenario", "cross", "--shock", "boom"])
    assert result.exit_code == 2 and "cannot read shock 'boom'" in result.output


def test_price_options_are_checked_before_anything_starts(tmp_path):
    """Each of these would start nothing: a clear error and exit code 2 at once."""
    cases = [
        (["up", "--price", "SOL-PERP=100"], "--price does not apply with a scenario (flash-crash)"),
        (["up", "--scenario", "calm", "--flat"], "--flat does not apply with a scenario (calm)"),
        (["up", "--no-participants", "--price", "SOL-PERP=abc"], "'abc' is not a number"),
        (["up", "--no-participants", "--replay", f"SOL-PERP={tmp_path / 'missing.csv'}"], "does not exist"),
        (["up", "--no-participants", "--shock", "DOGE-PERP:-10% at 5s"], "unknown market 'DOGE-PERP'"),
        (["up", "--shock", "ETH-PERP:-50% at 3s"], "flash-crash has no prices for ETH-PERP"),
        (["oracle", "--bootstrap", "127.0.0.1:1", "--price", "SOL-PERP"], "must look like MARKET=VALUE"),
    ]
    for arguments, message in cases:
        result = CliRunner().invoke(main, arguments)
        assert result.exit_code == 2, (arguments, result.output)
        assert message in result.output, (arguments, result.output)


def test_each_service_command_shows_only_its_own_options():
    def options(command: str) -> set[str]:
        text = CliRunner().invoke(main, [command, "--help"]).output
        return set(re.findall(r"^\s+(--[a-z-]+)", text, re.M))

    common = {"--bootstrap", "--partitions", "--venue", "--log-level"}
    assert common <= options("matching") and common <= options("risk") and common <= options("liquidation")
    for service in ("matching", "risk", "liquidation"):
        assert not options(service) & {"--price", "--shock", "--scenario", "--gateway-port"}, service
    assert {"--price", "--shock", "--scenario"} <= options("oracle") and "--gateway-port" not in options("oracle")
    assert {"--gateway-port", "--hyperliquid-port"} <= options("gateway") and "--shock" not in options("gateway")
    assert {"--price", "--shock", "--gateway-port"} <= options("up")
    assert "%%" not in CliRunner().invoke(main, ["up", "--help"]).output
