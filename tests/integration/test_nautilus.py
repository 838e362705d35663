"""nautilus_trader's own Binance Futures adapter on the Binance dialect, a whole session:
it connects (account, exchangeInfo, symbolConfig, the listen key and streams), buys,
rests a limit order and cancels it, has a stop-market order refused as Binance refuses it
on /fapi/v1/order (-4120: conditional orders go to the Algo Order API since December
2025, which nautilus_trader 1.221 does not call), sells half; then a new node on the same
account reconciles the position and sees it liquidated when the price gaps through it.
Every figure nautilus reports is checked against the venue's own answers and against
what the trades imply, computed here.

nautilus_trader runs as its own process from a virtualenv of its own
(``.venv-nautilus``, tests/clients/nautilus-requirements.txt: its pins differ from
Freqtrade's), made by this test the first time (about 30 s), as a user installs it; the
venue runs in this process (the services on the in-memory bus, the gateway on a loopback
port)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.markets import default_markets
from schemas.enums import Side
from services.runtime.broker import die_with_parent
from tests.integration import test_gateway
from tests.integration.conftest import ROOT
from tests.integration.test_gateway import api_key, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

venue = test_gateway.venue
VENV = ROOT / ".venv-nautilus"
REQUIREMENTS = ROOT / "tests" / "clients" / "nautilus-requirements.txt"
SESSION = ROOT / "tests" / "clients" / "nautilus_session.py"
SOL = "SOL/USDT:USDT"


@pytest.fixture(scope="session")
def nautilus_python():
    """The interpreter of ``.venv-nautilus``, made (or remade, when the requirements
    changed) with pip from the package index."""
    python = VENV / "bin" / "python"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    marker = VENV / "requirements.sha256"
    if not python.exists() or not marker.exists() or marker.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                                 capture_output=True, text=True, timeout=900)
        assert install.returncode == 0, f"nautilus_trader did not install: {install.stderr[-3000:]}"
        marker.write_text(wanted)
    return python


class Node:
    """One nautilus_trader node process and the JSON lines it writes to its events file,
    read as they come; its own log (stdout and stderr) is kept for the failure message."""

    def __init__(self, process: asyncio.subprocess.Process, events: Path):
        self.process = process
        self.path = events
        self.events: list[dict] = []
        self.log: list[str] = []
        self._read = 0
        self._logs = [asyncio.create_task(self._keep(stream)) for stream in (process.stdout, process.stderr)]

    @classmethod
    async def start(cls, python, base: str, key: str, secret: str, phase: str, folder: Path) -> Node:
        events = folder / f"nautilus-{phase}.jsonl"
        process = await asyncio.create_subprocess_exec(
            str(python), str(SESSION), "--http", base, "--ws", base.replace("http://", "ws://"), "--key", key,
            "--secret", secret, "--phase", phase, "--events", str(events), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
        return cls(process, events)

    async def _keep(self, stream) -> None:
        async for line in stream:
            self.log.append(line.decode(errors="replace").rstrip())

    def _poll(self) -> None:
        if not self.path.exists():
            return
        text = self.path.read_text()
        end = text.rfind("\n") + 1  # whole lines only
        for line in text[self._read:end].splitlines():
            seen = json.loads(line)
            self.events.append(seen)
            if seen["event"] == "error":
                raise AssertionError(f"the session failed: {seen}\n{self.tail()}")
        self._read = end

    async def until(self, event: str, timeout: float = 120) -> dict:
        """The first line of kind ``event``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self._poll()
            for seen in self.events:
                if seen["event"] == event:
                    return seen
            if asyncio.get_running_loop().time() > deadline or self.process.returncode is not None:
                self._poll()
                if any(seen["event"] == event for seen in self.events):
                    continue
                raise AssertionError(f"nautilus_trader never said {event!r}; it said {self.events}\n{self.tail()}")
            await asyncio.sleep(0.1)

    def all(self, event: str) -> list[dict]:
        return [seen for seen in self.events if seen["event"] == event]

    async def ended(self, timeout: float = 60) -> int:
        await self.until("stopped", timeout)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.gather(*self._logs)
        return code

    def tail(self) -> str:
        return "\n".join(self.log[-60:])

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def wallet(deposit: str, taker_ppm: int, trades: list[tuple[str, str, str]]) -> Decimal:
    """The wallet after ``trades`` (side, quantity, price) from flat: the deposit, less each
    trade's taker fee, plus the PnL realised by the sells against the average entry."""
    balance, held, cost = Decimal(deposit), Decimal(0), Decimal(0)
    for side, quantity, price in trades:
        qty, px = Decimal(quantity), Decimal(price)
        balance -= qty * px * taker_ppm / 1_000_000
        if side == "BUY":
            held, cost = held + qty, cost + qty * px
        else:
            average = cost / held
            balance += (px - average) * qty
            held, cost = held - qty, cost - average * qty
    return balance


async def test_nautilus_trader_trades_restarts_and_sees_its_liquidation(venue, nautilus_python, tmp_path):
    exchange, client, oracle, gateway = venue
    markets = default_markets()
    sol = markets["SOL-PERP"]
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit("quant", "100")
    await client.place("maker", "SOL-PERP", Side.BUY, "50", "149.9")
    await client.place("maker", "SOL-PERP", Side.SELL, "50", "150.1")
    await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].bids)
    key, secret = await api_key(gateway, "quant")
    exchange.apiKey, exchange.secret = key, secret

    # the first node: entry, a resting order cancelled, a stop refused, half closed
    node = await Node.start(nautilus_python, gateway.base, key, secret, "open", tmp_path)
    try:
        started = await node.until("started")
        assert started["instrument"] == "SOLUSDT-PERP.BINANCE"
        assert (started["price_increment"], started["size_increment"]) == ("0.01", "0.01")  # as exchangeInfo says
        assert started["position"] == "0" and started["orders"] == []
        await asyncio.sleep(2)  # its streams subscribed (Binance sends bookTicker on a change, none at first)
        await client.place("maker", "SOL-PERP", Side.BUY, "1", "149.9")
        done = await node.until("done", 180)
        assert await node.ended() == 0, node.tail()
    finally:
        await node.kill()
    print(*node.events, sep="\n")
    fills = node.all("filled")
    assert [(f["side"], f["quantity"], f["price"]) for f in fills] == [("BUY", "2.00", "150.10"),
                                                                      ("SELL", "1.00", "149.90")], node.events
    [cancelled] = node.all("canceled")
    [refused] = node.all("rejected")
    assert "-4120" in refused["reason"] or "Algo Order" in refused["reason"], refused
    assert Decimal(done["position"]) == 1 and done["orders"] == []
    assert node.all("quote")[0] == {"event": "quote", "bid": "149.90", "ask": "150.10"}
    # the venue agrees: one long, no open order (the limit was cancelled, the stop never placed)
    [position] = await exchange.fetch_positions([SOL])
    assert (position["side"], position["contracts"], position["entryPrice"]) == ("long", 1.0, 150.1)
    assert await exchange.fetch_open_orders(SOL) == []
    assert await exchange.fetch_open_orders(SOL, params={"trigger": True}) == []
    fees = [Decimal(f["commission"].split()[0]) for f in fills]
    assert fees == [Decimal("2") * Decimal("150.10") * sol.taker_fee_ppm / 1_000_000,
                    Decimal("1") * Decimal("149.90") * sol.taker_fee_ppm / 1_000_000]
    expected = wallet("100", sol.taker_fee_ppm, [("BUY", "2", "150.10"), ("SELL", "1", "149.90")])
    balance = await exchange.fetch_balance()
    assert Decimal(str(balance["info"]["totalWalletBalance"])) == expected.quantize(Decimal("0.00000001"))
    assert Decimal(done["account"]["total"]) == expected.quantize(Decimal("0.01")) or \
        abs(Decimal(done["account"]["total"]) - expected) < Decimal("0.01"), (done["account"], expected)

    # a new node on the same account: it reconciles the position, then the price gaps
    # through its liquidation price and it sees the position closed
    node = await Node.start(nautilus_python, gateway.base, key, secret, "resume", tmp_path)
    try:
        resumed = await node.until("started")
        assert Decimal(resumed["position"]) == 1 and resumed["orders"] == [], resumed
        await node.until("waiting")
        await oracle.mark("SOL-PERP", "40")  # equity 99.5 - 110: far below maintenance
        closed = await node.until("position_closed", 120)
        done = await node.until("done")
        assert await node.ended() == 0, node.tail()
    finally:
        await node.kill()
    assert Decimal(closed["position"]) == 0 and Decimal(done["position"]) == 0 and done["orders"] == []
    # what nautilus booked is the venue's liquidation fill (Binance's autoclose order)
    [liquidation] = closed["fills"]
    [forced] = await exchange.fapiPrivateGetForceOrders({"symbol": "SOLUSDT"})  # the venue's own record of it
    assert liquidation["client_order_id"] == forced["clientOrderId"] and forced["clientOrderId"].startswith("autoclose-")
    assert (liquidation["side"], liquidation["quantity"]) == ("SELL", "1.00") == (forced["side"], forced["executedQty"])
    # (nautilus_trader 1.221 books that fill at price 0: its stream parser reads no average
    # price, and it infers the fill from the order's status; the venue's message carries the
    # price in "p", "L" and "ap", as Binance's does. Its account total is right, below.)
    assert await exchange.fetch_positions([SOL]) == []
    balance = await exchange.fetch_balance()
    venue_wallet = Decimal(str(balance["info"]["totalWalletBalance"]))
    assert venue_wallet >= 0  # a liquidated account keeps what the liquidation left, never a debt
    assert Decimal(done["account"]["total"]) == venue_wallet, (done["account"], venue_wallet)
