"""The real Freqtrade (pinned in the test extras) trading futures through the gateway with
``stoploss_on_exchange``, configured as the README says: after its entry it places its
stop on the exchange (the Algo Order API), moves it up as the price rises (a trailing
stoploss: cancel and place again), and a falling market stops it out before the
liquidation price. Isolated and cross.

The venue runs in this process (the services on the in-memory bus, the gateway on a
loopback port); Freqtrade runs as its own process, as a user runs it. Three minutes of
trades with past timestamps give it closed one-minute candles at once."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from eth_account import Account

from exchange.markets import default_markets
from schemas.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import PlaceOrder
from services.gateway.ledger import ConditionalStatus
from services.runtime.broker import die_with_parent
from tests.integration import test_gateway, test_hyperliquid_info
from tests.integration.test_gateway import api_key, readme_freqtrade_snippet, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

venue = test_gateway.venue
FREQTRADE = shutil.which("freqtrade", path=str(Path(sys.executable).parent)) or shutil.which("freqtrade")

STRATEGY = '''
from freqtrade.strategy import IStrategy


class PerpsimStops(IStrategy):
    """Enters long at once and lets its stop on the exchange do the rest."""

    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = False
    stoploss = -0.06           # of the stake: 2% of the price at 3x
    trailing_stop = True       # the stop follows the price up
    minimal_roi = {"0": 100}
    use_exit_signal = False
    startup_candle_count = 0
    process_only_new_candles = False

    def populate_indicators(self, dataframe, metadata):
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        dataframe["enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        dataframe["exit_long"] = 0
        return dataframe

    def leverage(self, pair, current_time, current_rate, proposed_leverage, max_leverage, entry_tag, side,
                 **kwargs):
        return 3.0
'''


def config(exchange: dict, margin_mode: str, database: Path) -> dict:
    return {
        "trading_mode": "futures", "margin_mode": margin_mode, "stake_currency": "USDT", "stake_amount": 300,
        "tradable_balance_ratio": 0.99, "max_open_trades": 1, "dry_run": False, "timeframe": "1m",
        "exchange": {**exchange, "pair_whitelist": ["SOL/USDT:USDT"]},
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        # what the README says to enable: stoploss on exchange, checked every 2 s, on the mark
        "order_types": {"entry": "market", "exit": "market", "emergency_exit": "market", "force_exit": "market",
                        "force_entry": "market", "stoploss": "market", "stoploss_on_exchange": True,
                        "stoploss_on_exchange_interval": 2, "stoploss_price_type": "mark"},
        "unfilledtimeout": {"entry": 30, "exit": 30, "unit": "seconds"},
        "internals": {"process_throttle_secs": 1},
        "initial_state": "running", "bot_name": "perpsim-stops", "db_url": f"sqlite:///{database}",
    }


async def history(client, minutes: int = 3) -> None:
    """Trades between two accounts at 150 in each of the last ``minutes`` minutes."""
    now = time.time_ns()
    for back in range(minutes, 0, -1):
        ts = now - back * 60 * 1_000_000_000
        for account, side, tif in (("x", Side.SELL, TimeInForce.GTC), ("y", Side.BUY, TimeInForce.IOC)):
            await client.send(PlaceOrder(*client.stamp(), account, "SOL-PERP", f"h{back}{account}", side,
                                         OrderType.LIMIT, tif, 150_00, 100, False, SelfTradePrevention.NONE, ts))
        await asyncio.sleep(0.1)


async def quote(client, around: int) -> None:
    """The maker's quotes 0.05 either side of ``around`` (ticks), replacing its old ones."""
    for order_id in list(client_orders(client, "maker")):
        try:
            await client.cancel("maker", "SOL-PERP", order_id)
        except Exception:  # noqa: BLE001 - filled meanwhile
            pass
    await client.place("maker", "SOL-PERP", Side.BUY, "200", f"{(around - 5) / 100:.2f}")
    await client.place("maker", "SOL-PERP", Side.SELL, "200", f"{(around + 5) / 100:.2f}")


def client_orders(client, account: str) -> set[int]:
    live: set[int] = set()
    for m in client.events:
        kind = type(m).__name__
        if getattr(m, "account", None) != account:
            continue
        if kind == "OrderAccepted" and not m.condition:
            live.add(m.order_id)
        elif kind in ("OrderClosed", "OrderRejected"):
            live.discard(m.order_id)
    return live


async def start_bot(folder: Path, strategy: str, output):
    """Freqtrade as a user starts it: `freqtrade trade` with the folder's config and strategies."""
    return await asyncio.create_subprocess_exec(
        FREQTRADE, "trade", "--config", str(folder / "config.json"), "--strategy", strategy,
        "--strategy-path", str(folder / "strategies"), "--userdir", str(folder),
        stdout=output, stderr=asyncio.subprocess.STDOUT, cwd=folder, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=die_with_parent)


async def stop_bot(bot) -> None:
    """Freqtrade stopped as a user stops it (Ctrl-C), killed if it does not within 20 s."""
    if bot.returncode is None:
        bot.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(bot.wait(), 20)
        except TimeoutError:
            bot.kill()
            await bot.wait()


def trades(database: Path) -> list[dict]:
    if not database.exists():
        return []
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute("select * from trades")]
        except sqlite3.OperationalError:  # not created yet
            return []


async def binance_bot(folder: Path, gateway, margin_mode: str, strategy: str) -> None:
    """``folder`` set up as a user sets Freqtrade up on the Binance dialect: a new API key,
    the exchange section the README's snippet prints for it, the config and the strategy."""
    key, secret = await api_key(gateway, "freqtrade")
    snippet = readme_freqtrade_snippet().replace("127.0.0.1:8080", urlparse(gateway.base).netloc)
    (folder / "perpsim_exchange.py").write_text(snippet)
    printed = await asyncio.create_subprocess_exec(sys.executable, str(folder / "perpsim_exchange.py"), key, secret,
                                                   stdout=asyncio.subprocess.PIPE)
    exchange = json.loads((await printed.communicate())[0])
    (folder / "config.json").write_text(json.dumps(config(exchange, margin_mode, folder / "trades.sqlite")))
    (folder / "strategies").mkdir()
    (folder / "strategies" / "perpsim_stops.py").write_text(strategy)


async def open_market(client, oracle, bot_account: str) -> None:
    """SOL marked at 150, the bot funded with 1,000, three minutes of candles, the maker's
    quotes 0.05 either side of 150."""
    await oracle.mark("SOL-PERP", "150")
    for account, amount in ((bot_account, "1000"), ("maker", "1000000"), ("x", "100000"), ("y", "100000")):
        await client.deposit(account, amount)
    await history(client)
    await quote(client, 150_00)


def stopped_out_profit() -> float:
    """5.99 SOL bought at the maker's ask of 150.05 and sold at its bid of 146.45, each side
    paying the taker fee: what the wallet gains (negative) from flat to flat."""
    taker = default_markets()["SOL-PERP"].taker_fee_ppm / 1e6
    return 5.99 * (146.45 - 150.05) - taker * 5.99 * (150.05 + 146.45)


@pytest.mark.parametrize("margin_mode", ["isolated", "cross"])
async def test_freqtrade_stoploss_on_exchange_moves_its_stop_and_is_stopped_out_before_liquidation(
        venue, tmp_path, margin_mode):
    assert FREQTRADE, "Freqtrade is in the test extras: pip install -e '.[test]'"
    _, client, oracle, gateway = venue
    gateway_ledger = gateway.ledger
    database = tmp_path / "trades.sqlite"
    await binance_bot(tmp_path, gateway, margin_mode, STRATEGY)
    await open_market(client, oracle, "freqtrade")
    output = (tmp_path / "freqtrade.out").open("wb")
    bot = await start_bot(tmp_path, "PerpsimStops", output)
    try:
        # it enters, and puts its stop on the exchange
        await settle(gateway, lambda: bot.returncode is not None or (gateway_ledger.snapshot("freqtrade").positions
                     and gateway_ledger.open_conditionals("freqtrade")), timeout=90)
        assert bot.returncode is None, "Freqtrade stopped"
        [position] = gateway_ledger.snapshot("freqtrade").positions
        # a stake of 300 at 3x: 900 of SOL at the ask of 150.05, 5.99 SOL
        assert position.signed_size == 599 and position.mode.name == margin_mode.upper()
        [first] = gateway_ledger.open_conditionals("freqtrade")
        assert (first.condition.name, first.kind.name, first.reduce_only, first.source.name) == \
            ("STOP", "MARKET", True, "MARK")
        assert first.trigger_price == 147_05  # 6% of the stake at 3x: 2% under the entry of 150.05
        assert position.liquidation_price < first.trigger_price

        # the price rises: Freqtrade's trailing stop follows, cancelling and placing again
        for step in (151_00, 152_00, 153_00):
            await oracle.mark("SOL-PERP", f"{step / 100:.2f}")
            await quote(client, step)
        await settle(gateway, lambda: gateway_ledger.open_conditionals("freqtrade")
                     and gateway_ledger.open_conditionals("freqtrade")[0].trigger_price > first.trigger_price + 200,
                     timeout=60)
        [moved] = gateway_ledger.open_conditionals("freqtrade")
        assert gateway_ledger.conditionals[first.order_id].status is ConditionalStatus.CANCELED

        # then falls through the stop: the exchange stops it out, far above the liquidation price
        await oracle.mark("SOL-PERP", f"{(moved.trigger_price + 100) / 100:.2f}")
        await quote(client, moved.trigger_price - 20)
        await oracle.mark("SOL-PERP", f"{(moved.trigger_price - 10) / 100:.2f}")
        await settle(gateway, lambda: not gateway_ledger.snapshot("freqtrade").positions, timeout=30)
        assert gateway_ledger.conditionals[moved.order_id].status is ConditionalStatus.FINISHED
        assert not [m for m in client.events if type(m).__name__ == "LiquidationOutcome"]
        await settle(gateway, lambda: any(not t["is_open"] for t in trades(database)), timeout=60)
        [trade] = trades(database)
        assert (trade["is_open"], trade["exit_reason"]) == (0, "stoploss_on_exchange")
        assert trade["close_rate"] == pytest.approx((moved.trigger_price - 25) / 100, abs=0.02)
    except BaseException:
        print((tmp_path / "freqtrade.out").read_text()[-8000:])
        raise
    finally:
        await stop_bot(bot)
        output.close()


hyperliquid = test_hyperliquid_info.hyperliquid  # the venue with the Hyperliquid dialect on its own port

HYPERLIQUID_STRATEGY = STRATEGY.replace("class PerpsimStops", "class PerpsimHyperliquid")


def readme_freqtrade_hyperliquid_section(url: str, wallet) -> dict:
    """The README's ``exchange`` section for Freqtrade on the Hyperliquid dialect, with this
    venue's URL and the wallet filled in as a user fills them."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- freqtrade-hyperliquid -->", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    text = block.replace("http://127.0.0.1:8081", url).replace("ws://127.0.0.1:8081", url.replace("http", "ws"))
    return json.loads(text.replace("ADDRESS", wallet.address).replace("PRIVATE_KEY", wallet.key.hex()))


def hyperliquid_bot(folder: Path, url: str, wallet, strategy: str) -> None:
    """``folder`` set up as a user sets Freqtrade up on the Hyperliquid dialect, isolated:
    the README's exchange section for ``wallet``, the config and the strategy."""
    exchange = readme_freqtrade_hyperliquid_section(url, wallet)
    settings = config(exchange, "isolated", folder / "trades.sqlite")
    settings["stake_currency"] = "USDC"
    settings["exchange"]["pair_whitelist"] = exchange["pair_whitelist"]  # the README's: SOL/USDC:USDC
    settings["order_types"].update({"stoploss": "limit", "stoploss_on_exchange_limit_ratio": 0.99})
    del settings["order_types"]["stoploss_price_type"]  # Freqtrade refuses it on Hyperliquid: triggers use the mark
    settings["bot_name"] = "perpsim-hyperliquid"
    (folder / "config.json").write_text(json.dumps(settings))
    (folder / "strategies").mkdir()
    (folder / "strategies" / "perpsim_hyperliquid.py").write_text(strategy)


async def test_freqtrade_on_the_hyperliquid_dialect_sets_its_margin_enters_and_its_trigger_stop_fires(
        hyperliquid, tmp_path):
    """Freqtrade's own ``hyperliquid`` exchange class, configured from the README: markets
    load, the isolated margin mode and leverage are set, the entry fills, its stoploss on
    exchange is a Hyperliquid trigger order (a stop-limit on the mark), and a fall of the
    mark through it closes the trade."""
    assert FREQTRADE, "Freqtrade is in the test extras: pip install -e '.[test]'"
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    database = tmp_path / "trades.sqlite"
    hyperliquid_bot(tmp_path, url, wallet, HYPERLIQUID_STRATEGY)
    await open_market(client, oracle, address)
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot)
    output = (tmp_path / "freqtrade.out").open("wb")
    bot = await start_bot(tmp_path, "PerpsimHyperliquid", output)
    ledger = gateway.ledger
    try:
        await settle(gateway, lambda: bot.returncode is not None or (ledger.snapshot(address).positions
                     and ledger.open_conditionals(address)), timeout=90)
        assert bot.returncode is None, "Freqtrade stopped"
        [position] = ledger.snapshot(address).positions
        # a stake of 300 at 3x, isolated: 900 of SOL at the ask of 150.05 is 5.99 SOL
        assert (position.signed_size, position.mode.name, position.leverage) == (599, "ISOLATED", 3)
        [stop] = ledger.open_conditionals(address)
        assert (stop.condition.name, stop.kind.name, stop.reduce_only, stop.source.name) == ("STOP", "LIMIT", True, "MARK")
        assert stop.trigger_price == 147_05  # 6% of the stake at 3x: 2% under the entry of 150.05
        assert stop.price == 145_58  # Freqtrade's limit: 0.99 of the stop (145.5795), to the tick
        assert position.liquidation_price < stop.trigger_price

        # the mark falls through the stop: the limit sells into the maker's bid
        await oracle.mark("SOL-PERP", "148")
        await quote(client, 146_50)
        await oracle.mark("SOL-PERP", "147")
        await settle(gateway, lambda: not ledger.snapshot(address).positions, timeout=30)
        assert ledger.conditionals[stop.order_id].status is ConditionalStatus.FINISHED
        await settle(gateway, lambda: any(not t["is_open"] for t in trades(database)), timeout=60)
        [trade] = trades(database)
        assert (trade["is_open"], trade["exit_reason"]) == (0, "stoploss_on_exchange")
        assert trade["close_rate"] == pytest.approx(146.45)  # the maker's bid, 0.05 under 146.50
    except BaseException:
        print((tmp_path / "freqtrade.out").read_text()[-8000:])
        raise
    finally:
        await stop_bot(bot)
        output.close()


def stops_placed(client, account: str) -> list[int]:
    """Every conditional order the venue accepted for ``account``, in order."""
    return [m.order_id for m in client.events
            if type(m).__name__ == "OrderAccepted" and m.account == account and m.condition]


async def restarted_session(tmp_path, client, oracle, gateway, account: str, strategy: str, margin_mode: str):
    """Freqtrade enters with its stop on the exchange, is stopped and started again
    mid-trade (Ctrl-C, as a user restarts it), then the price falls through the stop: the
    trade, its position and its one stop carry on across the restart, and the stop closes the
    trade. Returns the trade (Freqtrade's database) and the wallet after it (micro units)."""
    ledger = gateway.ledger
    output = (tmp_path / "freqtrade.out").open("ab")
    database = tmp_path / "trades.sqlite"
    bot = await start_bot(tmp_path, strategy, output)
    try:
        await settle(gateway, lambda: bot.returncode is not None or (ledger.snapshot(account).positions
                     and ledger.open_conditionals(account)), timeout=90)
        assert bot.returncode is None, "Freqtrade stopped"
        [position] = ledger.snapshot(account).positions
        assert position.signed_size == 599 and position.mode.name == margin_mode.upper()
        [stop] = ledger.open_conditionals(account)

        # a restart mid-trade
        await stop_bot(bot)
        assert ledger.snapshot(account).positions and ledger.open_conditionals(account) == [stop]
        bot = await start_bot(tmp_path, strategy, output)
        await asyncio.sleep(20)  # twenty of its loops (throttle 1 s, stoploss_on_exchange_interval 2 s)
        assert bot.returncode is None, "Freqtrade stopped after its restart"
        [trade] = trades(database)
        assert trade["is_open"] == 1
        assert [c.order_id for c in ledger.open_conditionals(account)] == [stop.order_id], \
            "one stop for the one open trade, not a second after the restart"
        assert stops_placed(client, account) == [stop.order_id]

        # the price falls through the stop: it closes the trade
        await oracle.mark("SOL-PERP", "148")
        await quote(client, 146_50)
        await oracle.mark("SOL-PERP", "147")
        await settle(gateway, lambda: not ledger.snapshot(account).positions, timeout=30)
        assert not ledger.snapshot(account).positions
        await settle(gateway, lambda: not trades(database)[0]["is_open"], timeout=60)
        [trade] = trades(database)
        assert (trade["is_open"], trade["exit_reason"]) == (0, "stoploss_on_exchange")
        assert ledger.open_conditionals(account) == [] and stops_placed(client, account) == [stop.order_id]
        return trade, ledger.snapshot(account).balance
    except BaseException:
        output.flush()
        print((tmp_path / "freqtrade.out").read_text()[-8000:])
        raise
    finally:
        await stop_bot(bot)
        output.close()


@pytest.mark.timeout(300)
async def test_freqtrade_on_binance_restarted_mid_trade_keeps_one_stop_and_books_what_the_wallet_shows(
        venue, tmp_path):
    assert FREQTRADE, "Freqtrade is in the test extras: pip install -e '.[test]'"
    _, client, oracle, gateway = venue
    await binance_bot(tmp_path, gateway, "cross", STRATEGY.replace("trailing_stop = True", "trailing_stop = False"))
    await open_market(client, oracle, "freqtrade")
    trade, wallet = await restarted_session(tmp_path, client, oracle, gateway, "freqtrade", "PerpsimStops", "cross")
    # its profit is what the wallet gained or lost, fees included
    expected = stopped_out_profit()
    assert (wallet - 1000_000_000) / 1e6 == pytest.approx(expected, abs=1e-6)
    assert trade["close_profit_abs"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.timeout(300)
async def test_freqtrade_on_hyperliquid_restarted_mid_trade_keeps_one_stop_and_books_what_the_wallet_shows(
        hyperliquid, tmp_path):
    assert FREQTRADE, "Freqtrade is in the test extras: pip install -e '.[test]'"
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    hyperliquid_bot(tmp_path, url, wallet, HYPERLIQUID_STRATEGY.replace("trailing_stop = True", "trailing_stop = False"))
    await open_market(client, oracle, address)
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot)
    trade, balance = await restarted_session(tmp_path, client, oracle, gateway, address, "PerpsimHyperliquid",
                                             "isolated")
    # sold by the stop's limit into the maker's bid
    expected = stopped_out_profit()
    assert (balance - 1000_000_000) / 1e6 == pytest.approx(expected, abs=1e-6)
    assert trade["close_profit_abs"] == pytest.approx(expected, abs=1e-6)
