"""Broker outages: a paused broker is ridden out (calls made meanwhile fail clearly within
their timeout, calls after it succeed); a broker that is gone stops every process with
one clear message in bounded time."""

from __future__ import annotations

import os
import signal
import time

import pytest

from exchange.markets import default_markets
from schemas.enums import Side, TimeInForce
from services.client import Client
from services.runtime.broker import EmbeddedBroker, free_port
from services.runtime.claims import latest_claims
from tests.integration.conftest import Oracle, Stack, free_ports, kafka_bus

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker():
    broker = EmbeddedBroker()
    broker.start_blocking()
    yield broker
    if broker.process is not None and broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)
    broker.stop()


async def test_a_broker_paused_for_30_s_is_ridden_out(own_broker, tmp_path):
    stack = Stack(own_broker.bootstrap, tmp_path, 1)
    stack.start("matching", "risk", "liquidation")
    bus = await kafka_bus(own_broker.bootstrap, 1)
    try:
        async with Client(bus, default_markets(), timeout_s=60) as client:
            await Oracle(bus).mark("SOL-PERP", "150")
            await client.deposit("alice", "1000")
            await client.deposit("maker", "1000")
            await client.place("maker", "SOL-PERP", Side.SELL, "2", "150")  # matching serves: a steady state
            os.kill(own_broker.process.pid, signal.SIGSTOP)
            paused = time.monotonic()
            client.timeout_s = 5
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.deposit("alice", "1")  # fails clearly, within its timeout, send included
            assert time.monotonic() - started < 7
            time.sleep(max(0.0, 30 - (time.monotonic() - paused)))
            os.kill(own_broker.process.pid, signal.SIGCONT)
            client.timeout_s = 60  # the group settles again first
            order = await client.place("alice", "SOL-PERP", Side.BUY, "2", "150", tif=TimeInForce.IOC)
            assert sum(fill.size for fill in order.fills) == 200
            await client.deposit("alice", "5")
            snapshot = await client.snapshot("alice")
            # 1,000 + 5 (+ 1 if the deposit sent during the pause arrived after all), less the
            # taker fee on 300 of notional
            fee = -(-300 * 1_000_000 * default_markets()["SOL-PERP"].taker_fee_ppm // 1_000_000)
            assert snapshot.balance in (1005_000_000 - fee, 1006_000_000 - fee)
            assert [p.signed_size for p in snapshot.positions] == [200]
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
        stack.stop()


async def test_a_broker_paused_while_the_services_start_is_ridden_out(own_broker, tmp_path):
    stack = Stack(own_broker.bootstrap, tmp_path, 1)
    stack.start("matching", "risk", "liquidation")
    time.sleep(2.0)  # connected, joining their groups, restoring
    os.kill(own_broker.process.pid, signal.SIGSTOP)
    time.sleep(20)
    os.kill(own_broker.process.pid, signal.SIGCONT)
    bus = await kafka_bus(own_broker.bootstrap, 1)
    try:
        async with Client(bus, default_markets(), timeout_s=60) as client:
            await Oracle(bus).mark("SOL-PERP", "150")
            await client.deposit("alice", "1000")
            await client.deposit("maker", "1000")
            await client.place("maker", "SOL-PERP", Side.SELL, "2", "150")
            order = await client.place("alice", "SOL-PERP", Side.BUY, "2", "150", tif=TimeInForce.IOC)
            assert sum(fill.size for fill in order.fills) == 200
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
        stack.stop()


async def test_a_killed_broker_stops_every_process_with_one_clear_message(own_broker, tmp_path):
    stack = Stack(own_broker.bootstrap, tmp_path, 1, [*free_ports()])
    stack.start("matching", "risk", "liquidation", "oracle", "gateway")
    time.sleep(6)  # all of them connected and serving
    assert all(process.poll() is None for process in stack.processes.values()), stack.log_text()
    own_broker.process.kill()
    own_broker.process.wait()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and any(p.poll() is None for p in stack.processes.values()):
        time.sleep(0.5)
    running = [name for name, p in stack.processes.items() if p.poll() is None]
    try:
        assert not running, f"still running 40 s after the broker died: {running}"
        for name in stack.processes:
            text = (stack.logs / f"{name}.log").read_text()
            assert "is gone" in text, (name, text[-2000:])
            assert "Traceback" not in text, (name, text[-3000:])
            assert "Unclosed" not in text, (name, text[-3000:])
    except BaseException:
        print(stack.log_text())
        raise


async def test_a_broker_restarted_empty_on_the_same_port_stops_every_process_with_one_plain_message(
        own_broker, tmp_path):
    """Kill -9 the broker and start an empty one on its port: before, risk, matching and
    liquidation restored offset 0 from the empty log and served on with empty state (funded
    accounts got UNKNOWN_ACCOUNT). Every process must see that the venue's data is gone and
    stop, non-zero, with one message that says how to start fresh, and nothing else."""
    stack = Stack(own_broker.bootstrap, tmp_path, 2, ["--gateway-port", str(free_port()),
                                                      "--hyperliquid-port", str(free_port())])
    stack.start("matching", "risk", "liquidation", "oracle", "gateway")
    bus = await kafka_bus(own_broker.bootstrap, 2)
    try:
        async with Client(bus, default_markets()) as client:
            await client.deposit("alice", "1000")  # the venue has state worth keeping
    finally:
        await bus.stop()
    assert all(process.poll() is None for process in stack.processes.values()), stack.log_text()
    own_broker.process.kill()
    own_broker.process.wait()
    own_broker.start_blocking()  # the same port, nothing on it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(p.poll() is None for p in stack.processes.values()):
        time.sleep(0.5)
    running = [name for name, p in stack.processes.items() if p.poll() is None]
    for name in running:  # where a process that did not stop is waiting, in its log
        os.kill(stack.processes[name].pid, signal.SIGUSR1)
    time.sleep(0.5)
    try:
        assert not running, f"still running 30 s after the broker came back empty: {running}"
        for name, process in stack.processes.items():
            text = (stack.logs / f"{name}.log").read_text()
            assert process.returncode not in (0, None), (name, process.returncode)
            assert "the broker lost this venue's data" in text and "To start fresh" in text, (name, text[-2000:])
            assert "Traceback" not in text, (name, text[-3000:])
            assert "Unclosed" not in text, (name, text[-3000:])
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        stack.stop()


async def test_a_second_oracle_started_by_mistake_refuses_and_the_market_keeps_its_marks(stack_factory):
    """Before, a stray `perpsim oracle` for 20 s moved every mark (it liquidated a 20x long)
    and the real oracle's marks were dropped for good once it stopped."""
    stack = stack_factory(partitions=2, extra=["--price", "SOL-PERP=150", "--flat"])
    stack.start("matching", "risk", "oracle")
    bus = await kafka_bus(stack.bootstrap, 2)
    try:
        async with Client(bus, default_markets()) as client:
            await client.deposit("alice", "1000")
            time.sleep(3)  # the oracle publishes
            stack.start("oracle#2")
            text = exited(stack, "oracle#2")
            assert "another oracle is publishing marks on this venue" in text and "Traceback" not in text
            assert stack.processes["oracle"].poll() is None  # the real one goes on
            # and its marks still move risk: a market order is protected by the mark (150 flat)
            await client.deposit("maker", "100000")
            await client.place("maker", "SOL-PERP", Side.SELL, "1", "150")
            order = await client.place("alice", "SOL-PERP", Side.BUY, "1")
            assert order.filled == 100
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()


async def claim_after(bus, name: str, epoch: int, timeout: float = 30.0):
    """The claim of ``name`` once its epoch is above ``epoch``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claim = (await latest_claims(bus)).get(name)
        if claim is not None and claim.epoch > epoch:
            return claim
        time.sleep(0.2)
    raise AssertionError(f"{name} was not claimed again within {timeout} s")


def exited(stack: Stack, name: str, timeout: float = 30.0) -> str:
    """The log of process ``name`` once it has stopped with exit status 1 (within ``timeout``)."""
    process = stack.processes[name]
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    text = (stack.logs / f"{name}.log").read_text()
    assert process.returncode == 1, text[-2000:]
    return text


def wait_for_log(stack: Stack, name: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = (stack.logs / f"{name}.log").read_text()
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{name} never logged {text!r} in {timeout} s:\n{log[-3000:]}")


async def funded(stack: Stack, client: Client) -> None:
    """A maker and alice with money, once risk has run a while (the oracle's first marks are in)."""
    await client.deposit("maker", "100000")
    await client.deposit("alice", "10000")
    wait_for_log(stack, "risk", "status rate=")


async def test_a_paused_matching_instance_is_fenced_when_it_comes_back_and_the_market_goes_on(stack_factory):
    """A matching instance paused long enough to be replaced (a stale instance: a laptop
    asleep, a VM stopped, a process stopped by a debugger) comes back: it finds its successor's
    claim, stops serving the partition and says so; nothing it still writes under its old
    epoch is applied, and every order is answered once, by whoever serves the market."""
    stack = stack_factory(partitions=1, extra=["--price", "SOL-PERP=150", "--flat"])
    stack.start("matching", "risk", "oracle")
    bus = await kafka_bus(stack.bootstrap, 1)
    try:
        async with Client(bus, default_markets()) as client:
            await funded(stack, client)
            await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
            assert (await client.place("alice", "SOL-PERP", Side.BUY, "1", tif=TimeInForce.IOC)).filled == 100
            wait_for_log(stack, "matching", "took match.in[0] at epoch 1")
            stack.start("matching#2")  # a second instance: the group gives the one partition to one of them
            holder = await claim_after(bus, "match.in[0]", 1)  # the group settled: one of them claimed it again
            time.sleep(1)
            holder = (await latest_claims(bus))["match.in[0]"]
            stale, successor = (("matching", "matching#2") if f"{holder.instance} took" in
                                (stack.logs / "matching.log").read_text() else ("matching#2", "matching"))
            os.kill(stack.processes[stale].pid, signal.SIGSTOP)
            try:  # after the 3 s session timeout the other takes the partition
                wait_for_log(stack, successor, f"at epoch {holder.epoch + 1} from {holder.instance}")
                order = await client.place("alice", "SOL-PERP", Side.BUY, "1", tif=TimeInForce.IOC)
                assert order.filled == 100  # the successor serves the market
            finally:
                os.kill(stack.processes[stale].pid, signal.SIGCONT)
            log = wait_for_log(stack, stale, "fenced: matching-")
            assert f"took over match.in[0] at epoch {holder.epoch + 1}" in log and "Traceback" not in log
            for _ in range(3):  # and the market goes on, whichever instance the group gives it to now
                order = await client.place("alice", "SOL-PERP", Side.BUY, "1", tif=TimeInForce.IOC)
                assert order.filled == 100
            margin = await client.snapshot("alice")
            assert [p.signed_size for p in margin.positions] == [500]  # five buys of 1.00, each once
            for name in ("matching", "matching#2", "risk"):
                assert stack.processes[name].poll() is None, name
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()


async def test_a_paused_oracle_replaced_by_another_stops_when_it_comes_back_and_the_market_keeps_its_marks(stack_factory):
    """An oracle paused long enough for a second one to start (its marks went silent) comes
    back: it finds the successor's claim and stops with one message, and the market keeps
    trading on the successor's marks (that a successor's marks count even when its clock,
    and so its sequence, is behind the old one's: tests/test_claims.py)."""
    stack = stack_factory(partitions=1, extra=["--price", "SOL-PERP=150", "--flat"])
    stack.start("matching", "risk", "oracle")
    bus = await kafka_bus(stack.bootstrap, 1)
    try:
        async with Client(bus, default_markets()) as client:
            await funded(stack, client)
            os.kill(stack.processes["oracle"].pid, signal.SIGSTOP)
            try:
                stack.start("oracle#2")  # waits until the paused one's marks are 3 s old, then takes the name
                wait_for_log(stack, "oracle#2", "took oracle at epoch 2 from oracle-")
            finally:
                os.kill(stack.processes["oracle"].pid, signal.SIGCONT)
            text = exited(stack, "oracle")
            assert "took over oracle at epoch 2" in text and "Traceback" not in text
            # the successor's marks move risk: a market order is bounded by the mark, 150 (flat)
            await client.place("maker", "SOL-PERP", Side.SELL, "1", "150")
            assert (await client.place("alice", "SOL-PERP", Side.BUY, "1")).filled == 100
            assert stack.processes["oracle#2"].poll() is None
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
