"""Scenarios and the in-process simulation.

A scenario is a small TOML file (``services/scenarios/*.toml``, or any path): markets'
index sources and shocks, participants, duration, tick, seed, insurance fund. ``simulate``
runs it on the in-process core (matching, risk, liquidation, oracle) with a simulated
clock: every tick the oracle publishes, then every agent acts, in a fixed order. The same
scenario and seed give the same trades, whatever the machine.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.core import CoreExchange, money
from exchange.invariants import violations
from exchange.markets import Market
from exchange.oracle import (
    CsvReplay,
    IndexSource,
    Oracle,
    OracleError,
    RandomWalk,
    Shock,
    Shocked,
    sample_csv,
)
from exchange.venues import DEFAULT_VENUE
from exchange.venues import venue as venue_profile
from schemas.enums import LiquidationStage, OrderType, RejectReason, SelfTradePrevention
from schemas.events import (
    CancelOrder,
    CommandRejected,
    Fill,
    Funding,
    LiquidationOutcome,
    LiquidationTrigger,
    OrderRejected,
    OrderTriggered,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
)
from services.sim.participants import KINDS, Agent, Configure, Place

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file is missing or wrong; the message names the file and the field."""


@dataclass
class Scenario:
    name: str
    description: str
    duration_s: float
    tick_ms: int
    seed: int
    insurance_fund: str
    funding_interval_s: float | None  # None: the venue's
    oracle: dict[str, dict]
    participants: list[dict]
    source: str = ""


_TOP = {"name", "description", "duration_s", "tick_ms", "seed", "insurance_fund", "funding_interval_s", "oracle",
        "participants"}
_ORACLE = {"start", "volatility", "jumps_per_day", "jump_std", "shocks", "replay"}


def scenario_names() -> list[str]:
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A bundled scenario by name (see ``scenario_names``) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ScenarioError(f"no scenario {name_or_path!r}; bundled: {', '.join(scenario_names())}")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    where = str(path)
    unknown = set(data) - _TOP
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_TOP))}")
    oracle = data.get("oracle") or {}
    if not oracle:
        raise ScenarioError(f"{where}: needs at least one [oracle.MARKET] table")
    for market, spec in oracle.items():
        bad = set(spec) - _ORACLE
        if bad:
            raise ScenarioError(f"{where}: [oracle.{market}] unknown field(s) {', '.join(sorted(bad))}")
    participants = data.get("participants") or []
    for index, participant in enumerate(participants):
        if participant.get("kind") not in KINDS:
            raise ScenarioError(f"{where}: participant {index + 1} has kind {participant.get('kind')!r}; "
                                f"kinds: {', '.join(KINDS)}")
    try:
        scenario = Scenario(str(data.get("name", path.stem)), str(data.get("description", "")),
                            float(data.get("duration_s", 60)), int(data.get("tick_ms", 250)),
                            int(data.get("seed", 1)), str(data.get("insurance_fund", "100000")),
                            float(data["funding_interval_s"]) if "funding_interval_s" in data else None,
                            oracle, participants, where)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    if scenario.duration_s <= 0 or scenario.tick_ms <= 0:
        raise ScenarioError(f"{where}: duration_s and tick_ms must be positive")
    return scenario


def sources(scenario: Scenario, markets: dict[str, Market], seed: int) -> dict[str, IndexSource]:
    result: dict[str, IndexSource] = {}
    for index, (market, spec) in enumerate(sorted(scenario.oracle.items())):
        if market not in markets:
            raise ScenarioError(f"{scenario.source}: [oracle.{market}] is not a market; markets: {', '.join(markets)}")
        try:
            if "replay" in spec:
                source: IndexSource = CsvReplay.from_file(sample_csv() if spec["replay"] == "sample" else spec["replay"])
            else:
                source = RandomWalk(float(spec.get("start", 100)), volatility=float(spec.get("volatility", 0.6)),
                                    seed=seed * 1000 + index, jumps_per_day=float(spec.get("jumps_per_day", 0)),
                                    jump_std=float(spec.get("jump_std", 0.02)))
            shocks = [Shock.parse(text) for text in spec.get("shocks", [])]
        except OracleError as exc:
            raise ScenarioError(f"{scenario.source}: [oracle.{market}]: {exc}") from None
        result[market] = Shocked(source, shocks) if shocks else source
    return result


def agents(scenario: Scenario, seed: int, tick_s: float) -> list[Agent]:
    built: list[Agent] = []
    for index, participant in enumerate(scenario.participants):
        options = {k: v for k, v in participant.items() if k not in ("kind", "count")}
        cls = KINDS[participant["kind"]]
        if cls.kind == "leveraged":  # one agent holding `count` accounts
            names = [f"lev{index}"]
            options["count"] = int(participant.get("count", 1))
        else:
            names = [f"{cls.kind.replace('_', '')}{index}-{n}" for n in range(int(participant.get("count", 1)))]
        if "leverage" in options:
            options["leverage"] = tuple(options["leverage"])
        if "utilisation" in options:
            options["utilisation"] = tuple(options["utilisation"])
        if cls.kind in ("taker", "noise"):
            options.setdefault("tick_s", tick_s)
        for offset, name in enumerate(names):
            try:
                built.append(cls(name, seed * 10_000 + index * 100 + offset, **options))
            except TypeError as exc:
                raise ScenarioError(f"{scenario.source}: participant {index + 1} ({cls.kind}): {exc}") from None
    return built


# ---------------------------------------------------------------------- running it


class CoreView:
    """The ``View`` agents get from the in-process core."""

    def __init__(self, ex: CoreExchange):
        self.ex = ex
        self.ts = 0

    def mark(self, market: str) -> int:
        return self.ex.risk.marks.marks.get(market, 0)

    def index(self, market: str) -> int:
        return round(self.ex.oracle.index_ticks(market, self.ts)) if market in self.ex.oracle.sources else 0

    def top(self, market: str) -> tuple[int, int]:
        bid, _, ask, _ = self.ex.matching[market].book.top()
        return bid, ask

    def position(self, account: str, market: str) -> int:
        return self.ex.matching[market].position(account)

    def open_orders(self, account: str, market: str) -> list[int]:
        holder = self.ex.risk.accounts.get(account)
        return [o.order_id for o in holder.orders.values() if o.market == market] if holder else []

    def lots_for(self, market: str, usd: float) -> int:
        mark = self.mark(market)
        return int(usd * 1_000_000 // (mark * self.ex.markets[market].value_per_tick_lot)) if mark else 0


@dataclass
class Sample:
    ts: int
    marks: dict[str, int]
    index: dict[str, int]
    open_interest: dict[str, int]
    insurance_fund: int
    pnl: dict[str, int]  # by participant kind: equity now − deposits, micro units


@dataclass
class SimulationResult:
    scenario: Scenario
    seed: int
    exchange: CoreExchange
    samples: list[Sample] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds per command, in-process
    orders: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    agents: list[Agent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    strategy: Any = None  # the StrategyDriver, when a strategy ran
    venue: str = DEFAULT_VENUE

    @property
    def fills(self) -> list[Fill]:
        return [event for event in self.exchange.log if isinstance(event, Fill)]

    @property
    def liquidations(self) -> list[LiquidationTrigger]:
        return [e for e in self.exchange.log if isinstance(e, LiquidationTrigger) and not e.update]

    @property
    def outcomes(self) -> list[LiquidationOutcome]:
        return [e for e in self.exchange.log if isinstance(e, LiquidationOutcome)
                and e.stage is not LiquidationStage.TRIGGERED]

    @property
    def stops_fired(self) -> list[OrderTriggered]:
        return [e for e in self.exchange.log if isinstance(e, OrderTriggered)]

    @property
    def funding_events(self) -> list[Funding]:
        return [e for e in self.exchange.log if isinstance(e, Funding)]


def _execute(ex: CoreExchange, intent: Any, result: SimulationResult) -> None:
    stamp = ex.stamp()
    if isinstance(intent, Configure):
        commands = [SetMarginMode(*stamp, intent.account, intent.market, intent.mode, ex.ts),
                    SetLeverage(*ex.stamp(), intent.account, intent.market, intent.leverage, ex.ts)]
    elif isinstance(intent, Place):
        kind = OrderType.MARKET if intent.price == 0 else OrderType.LIMIT
        commands = [PlaceOrder(*stamp, intent.account, intent.market, f"{intent.account}-{stamp[1]}", intent.side,
                               kind, intent.tif, intent.price, intent.size, intent.reduce_only,
                               SelfTradePrevention.CANCEL_TAKER, ex.ts, intent.condition, intent.trigger,
                               close_position=intent.close_position)]
        result.orders += 1
    else:
        commands = [CancelOrder(*stamp, intent.account, intent.market, intent.order_id, ex.ts)]
    for command in commands:
        started = time.perf_counter()
        events = ex.submit(command)
        result.latencies.append(time.perf_counter() - started)
        for event in events:
            if isinstance(event, (OrderRejected, CommandRejected)) and event.reason is not RejectReason.MARGIN_MODE_UNCHANGED:
                name = event.reason.name
                result.rejected[name] = result.rejected.get(name, 0) + 1


def simulate(scenario: Scenario, seed: int | None = None, duration_s: float | None = None,
             on_tick: Callable[[SimulationResult, int, int], None] | None = None,
             check_every: int = 20, strategy: Any = None, venue: str = DEFAULT_VENUE) -> SimulationResult:
    """Run ``scenario`` in-process; ``on_tick(result, tick, ticks)`` reports progress.
    The invariants are checked every ``check_every`` ticks and at the end. A ``strategy``
    (``services.sim.strategy.Strategy``) trades from the account "strategy" and gets its
    callbacks after the participants have acted, every tick. ``venue``: the profile
    (``exchange.venues``) whose markets and funding the run uses."""
    seed = scenario.seed if seed is None else seed
    duration = scenario.duration_s if duration_s is None else duration_s
    profile = venue_profile(venue)
    markets = profile.markets()
    tick_s = scenario.tick_ms / 1000
    oracle = Oracle(markets, sources(scenario, markets, seed), funding_interval_s=scenario.funding_interval_s,
                    funding=profile.funding, mark_rule=profile.mark)
    ex = CoreExchange(markets, oracle=oracle, venue=profile)
    result = SimulationResult(scenario, seed, ex, agents=agents(scenario, seed, tick_s), venue=profile.name)
    view = CoreView(ex)
    started = time.perf_counter()
    ex.deposit("insurance", scenario.insurance_fund)
    ex.advance(0)
    for agent in result.agents:
        for account in agent.accounts:
            ex.deposit(account, agent.deposit)
        for intent in agent.setup():
            _execute(ex, intent, result)
    if strategy is not None:
        from services.sim.strategy import StrategyDriver, StrategyError

        unknown = [m for m in strategy.markets if m not in ex.markets]
        if unknown:
            raise StrategyError(f"{type(strategy).__name__} trades {', '.join(unknown)}, not a market here; "
                                f"markets: {', '.join(ex.markets)}")
        unpriced = [m for m in strategy.markets if m not in scenario.oracle]
        if unpriced:
            raise StrategyError(f"{type(strategy).__name__} trades {', '.join(unpriced)}, which scenario "
                                f"{scenario.name} does not price (it prices {', '.join(sorted(scenario.oracle))})")

        result.strategy = StrategyDriver(strategy, ex)
        result.strategy.start()
    ticks = int(duration * 1000 // scenario.tick_ms)
    traded = sorted(scenario.oracle)
    for tick in range(ticks + 1):
        ts = tick * scenario.tick_ms * 1_000_000
        ex.ts = max(ex.ts, ts)
        ex.advance(ts)
        view.ts = ts
        for agent in result.agents:
            for intent in agent.on_tick(view):
                _execute(ex, intent, result)
        if result.strategy is not None:
            result.strategy.tick()
        marks = {m: view.mark(m) for m in traded}
        result.samples.append(Sample(
            ts, marks, {m: round(oracle.index_ticks(m, ts)) for m in traded},
            {m: sum(size for size in ex.matching[m].positions.values() if size > 0) for m in traded},
            ex.risk.fund_balance(), pnl_by_kind(result)))
        if tick % check_every == 0 or tick == ticks:
            result.problems.extend(violations(ex.risk, ex.matching.values()))
        if on_tick is not None:
            on_tick(result, tick, ticks)
    result.wall_s = time.perf_counter() - started
    if result.strategy is not None:
        result.strategy.close()
    return result


def pnl_by_kind(result: SimulationResult) -> dict[str, int]:
    pnl: dict[str, int] = {}
    if result.strategy is not None:
        pnl["strategy"] = result.exchange.equity("strategy") - money(result.strategy.strategy.deposit)
    for agent in result.agents:
        deposit = money(agent.deposit)
        total = sum(result.exchange.equity(account) - deposit for account in agent.accounts)
        pnl[agent.kind] = pnl.get(agent.kind, 0) + total
    return pnl


def trade_list(result: SimulationResult) -> list[tuple]:
    return [(f.market, f.trade_id, f.price, f.size, int(f.taker_side), f.taker_account, f.maker_account,
             int(f.liquidity)) for f in result.fills]

