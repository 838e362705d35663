"""Integration fixtures: a real broker per test, services as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exchange.markets import default_markets
from schemas import topic_partitions
from schemas.events import Funding, MarkPrice
from schemas.topics import ORACLE, ROUTES
from services.gateway.registry import DIALECTS
from services.runtime.broker import EmbeddedBroker, die_with_parent, free_port
from services.runtime.kafka import KafkaBus, KafkaSettings
from services.runtime.runner import Outbox

ROOT = Path(__file__).resolve().parents[2]


def free_ports() -> list[str]:
    """A free port for every dialect's option (``--gateway-port 41213 --hyperliquid-port ...``):
    a test never takes a default port that a user's venue may be using."""
    return [option for dialect in DIALECTS for option in (dialect.port_option, str(free_port()))]


@pytest.fixture
def broker():
    """A Tansu broker of our own on a free loopback port, stopped after the test."""
    instance = EmbeddedBroker()
    bootstrap = instance.start_blocking()
    yield bootstrap
    instance.stop()


ORACLE_FLAGS = {"--price", "--shock", "--replay", "--flat", "--volatility", "--seed", "--scenario"}
GATEWAY_FLAGS = {"--gateway-host", "--rate-limits", *(dialect.port_option for dialect in DIALECTS)}
SWITCHES = {"--flat"}


class Stack:
    """perpsim services as separate OS processes against one broker."""

    def __init__(self, bootstrap: str, state_dir: Path, partitions: int, extra: list[str] | None = None):
        self.bootstrap = bootstrap
        self.state_dir = state_dir
        self.partitions = partitions
        self.extra = extra or []
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, *names: str) -> None:
        """Start services; ``risk#2`` is a second instance of risk (same consumer group)."""
        for name in names:
            with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own handle
                self._spawn(name, log)

    def _own(self, service: str) -> list[str]:
        """The extra options this service takes: each command has only its own (the
        oracle's prices, the gateway's ports) besides the common ones."""
        kept, options = [], iter(self.extra)
        for option in options:
            flag = option.split("=", 1)[0]
            owner = "oracle" if flag in ORACLE_FLAGS else "gateway" if flag in GATEWAY_FLAGS else None
            value = [] if flag in SWITCHES or "=" in option else [next(options)]
            if owner in (None, service):
                kept += [option, *value]
        return kept

    def _spawn(self, name: str, log) -> None:
        service = name.split("#")[0]
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", service, "--bootstrap", self.bootstrap,
             "--partitions", str(self.partitions), "--state-dir", str(self.state_dir / "state"),
             "--snapshot-interval", "0.5", "--log-level", "INFO", *self._own(service)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent)

    def kill(self, name: str) -> None:
        """kill -9: no snapshot, no commit, no goodbye."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()

    def log_text(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.logs.glob("*.log")))


@pytest.fixture
def stack_factory(tmp_path):
    """Stacks of services, each on a broker of its own (so that runs never share topics)."""
    stacks: list[Stack] = []
    brokers: list[EmbeddedBroker] = []

    def make(partitions: int = 2, extra: list[str] | None = None) -> Stack:
        broker = EmbeddedBroker()
        brokers.append(broker)
        stack = Stack(broker.start_blocking(), tmp_path / f"stack{len(stacks)}", partitions, extra)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    for broker in brokers:
        broker.stop()


async def kafka_bus(bootstrap: str, partitions: int) -> KafkaBus:
    bus = KafkaBus(KafkaSettings(bootstrap, connect_timeout_s=10), topic_partitions(partitions))
    await bus.start()
    return bus


class Oracle:
    """Publishes marks and funding where the oracle service does (``schemas.topics.ROUTES``):
    every risk.in partition, market.data, and for marks the market's match.in partition."""

    def __init__(self, bus, wall_clock: bool = False):
        """``wall_clock``: stamp events with the time (as the oracle service does), else
        with their count. Its producer id is the oracle's (only the oracle may send marks),
        and its sequence numbers start from the wall clock, as the oracle service's do."""
        self.bus = bus
        self.producer = "oracle"
        self.seq = time.time_ns()
        self.count = 0
        self.markets = default_markets()
        self.wall_clock = wall_clock

    async def mark(self, market: str, price: str, index: str | None = None) -> None:
        """The mark at ``price``, the index at ``index`` (the mark's price if none)."""
        ticks = self.markets[market].price_to_ticks(price)
        index_ticks = self.markets[market].price_to_ticks(index) if index else ticks
        self.seq += 1
        self.count += 1
        await self._publish(market, MarkPrice(self.producer, self.seq, market, index_ticks, ticks, self._ts()))

    async def funding(self, market: str, rate_ppb: int, price: str) -> None:
        """A payment of ``rate_ppb`` charged on ``price`` (the venue's: the index or the mark)."""
        self.seq += 1
        self.count += 1
        ticks = self.markets[market].price_to_ticks(price)
        await self._publish(market, Funding(self.producer, self.seq, market, rate_ppb, ticks, self._ts()))

    def _ts(self) -> int:
        return time.time_ns() if self.wall_clock else self.count

    async def _publish(self, market: str, event) -> None:
        outbox = Outbox(self.bus)
        outbox.route(ROUTES[ORACLE], [event])  # where the oracle service sends it
        records = outbox.drain()
        await self.bus.send(records)
