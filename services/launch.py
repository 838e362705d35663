"""Running the services as processes: one service in this process, or ``up`` for all.

``run_service`` is what ``perpsim <service>`` runs; ``run_up`` is ``perpsim up``: the
embedded broker (unless a cluster is given), the topics, and every service as its own OS
process, stopped cleanly (SIGTERM: each service sends what it has, snapshots, commits,
closes) on Ctrl-C, SIGTERM or when ``duration`` is over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from exchange.markets import Market
from exchange.oracle import Shocked
from exchange.venues import DEFAULT_VENUE, venue
from schemas import RISK_IN, topic_partitions
from services import liquidation as liquidation_service
from services import matching as matching_service
from services import risk as risk_service
from services.oracle import OracleService, parse_shocks, parse_sources
from services.runtime.broker import (
    EmbeddedBroker,
    die_with_parent,
    free_port,
    watch_broker,
)
from services.runtime.bus import BusError
from services.runtime.kafka import KafkaBus, KafkaSettings, ensure_topics
from services.runtime.loop import loop_name
from services.runtime.loop import run as run_on_loop
from services.runtime.runner import ServiceRunner
from services.runtime.venue import VenueWatch, ensure_identity
from services.sim.simulation import load_scenario
from services.sim.simulation import sources as scenario_sources

log = logging.getLogger("perpsim")

SERVICES = ("matching", "risk", "liquidation", "oracle", "gateway")


@dataclass
class Options:
    """What every service process is started with."""

    settings: KafkaSettings
    markets: dict[str, Market]
    partitions: int = 4
    state_dir: Path | None = None  # local files: the embedded broker's log
    snapshot_interval_s: float = 5.0
    insurance_account: str = "insurance"
    oracle_args: dict = field(default_factory=dict)
    scenario: str | None = None  # the oracle follows this scenario's prices; `up` runs its participants
    gateway_host: str = "127.0.0.1"
    # the gateway's port per dialect (services.gateway.registry), by name; missing: its default
    ports: dict[str, int] = field(default_factory=dict)
    forward: list[str] = field(default_factory=list)  # CLI arguments passed on to every child process
    forward_to: dict[str, list[str]] = field(default_factory=dict)  # and to one service only (its own options)
    venue: str = DEFAULT_VENUE  # exchange.venues: the markets' table (unless a file gives them) and the funding rule
    web_url: str = ""  # the gateway's web view, once `up` knows its port
    rate_limits: bool = True  # the gateway enforces the venues' published rate limits


LOG_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s pid=%(process)d %(message)s"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr, format=LOG_FORMAT)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors reach us as BusError


async def _serve(name: str, options: Options) -> None:
    bus = KafkaBus(options.settings, topic_partitions(options.partitions))
    await bus.start()
    stop, lost = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _log_tasks, name)  # `kill -USR1 <pid>`: what each task waits on
    log.info("service=%s starting bootstrap=%s partitions=%d loop=%s", name, options.settings.bootstrap,
             options.partitions, loop_name())
    identity = await ensure_identity(bus)
    log.info("service=%s venue=%s", name, identity.id)
    watchdog = asyncio.create_task(watch_broker(options.settings.bootstrap, lost))
    venue_watch = asyncio.create_task(VenueWatch(bus, identity).run())
    service = asyncio.create_task(_run_one(name, options, bus, stop))
    try:
        await asyncio.wait([service, watchdog, venue_watch], return_when=asyncio.FIRST_COMPLETED)
        if lost.is_set() or venue_watch.done():
            # the client library's tasks fail as they are abandoned to a broker that will not
            # answer: what they leave behind is no news, the one message below says it all
            loop.set_exception_handler(_quiet)
        if lost.is_set():  # nothing can be sent or saved: stop at once, with one clear message
            await _cancel(service, name)
            raise BusError(f"the Kafka broker at {options.settings.bootstrap} is gone; {name} stopped")
        if venue_watch.done():  # the broker is there but holds another venue's data, or none
            log.error("service=%s %s", name, venue_watch.exception())
            await _cancel(service, name)
            raise BusError(f"{venue_watch.exception()}; {name} stopped")
        await service
    finally:
        for task in (watchdog, venue_watch):
            await _cancel(task, name)
        await _stop_bus(bus, name, gone=lost.is_set())
        log.info("service=%s stopped", name)


def _quiet(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    log.debug("after the broker was lost: %s %s", context.get("message"), context.get("exception") or "")


def _log_tasks(name: str, level: int = logging.WARNING) -> None:
    """Log where each of the process's tasks waits (for a process that looks stuck)."""
    for task in asyncio.all_tasks():
        frames = [f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}"
                  for frame in task.get_stack(limit=12)]
        log.log(level, "service=%s task %s waits at %s", name, task.get_name(), " < ".join(reversed(frames)))


CANCEL_WAIT_S = 10.0


async def _cancel(task: asyncio.Task, name: str = "") -> None:
    """Cancel ``task`` and wait for it to end (at most ``CANCEL_WAIT_S``: the client
    library's own clean-up can wait on a broker that will not answer); what it raised on
    the way is its own business."""
    task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(task), CANCEL_WAIT_S)
    except TimeoutError:
        log.warning("service=%s still stopping after %.0f s; leaving it", name, CANCEL_WAIT_S)
        _log_tasks(name, logging.DEBUG)
    except BaseException as exc:  # noqa: BLE001 - ended: cancelled, or failed as the reason we stop
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise


async def _stop_bus(bus: KafkaBus, name: str, gone: bool) -> None:
    """Close the bus's clients, so that nothing is left unclosed; a broker that is gone
    gets a few seconds, not the clients' own retries."""
    try:
        await asyncio.wait_for(bus.stop(), 3.0 if gone else 30.0)
    except (TimeoutError, BusError, OSError) as exc:
        log.warning("service=%s the bus did not close cleanly: %s", name, exc or type(exc).__name__)


async def _run_one(name: str, options: Options, bus: KafkaBus, stop: asyncio.Event) -> None:
    if name == "gateway":
        await _serve_gateway(bus, options, stop)
    elif name == "oracle":
        if options.scenario:
            scenario = load_scenario(options.scenario)
            sources = scenario_sources(scenario, options.markets, options.oracle_args.get("seed") or scenario.seed)
            for market, shocks in parse_shocks(options.markets, options.oracle_args.get("shocks", ())).items():
                sources[market] = Shocked(sources[market], shocks)  # --shock, on top of the scenario's prices
            service = OracleService(bus, options.markets, sources, tick_s=scenario.tick_ms / 1000,
                                    funding_interval_s=scenario.funding_interval_s,
                                    funding=venue(options.venue).funding, mark_rule=venue(options.venue).mark)
        else:
            sources = parse_sources(options.markets, **options.oracle_args)
            service = OracleService(bus, options.markets, sources, funding=venue(options.venue).funding,
                                    mark_rule=venue(options.venue).mark)
        await service.run(stop)
    else:
        if name == "matching":
            spec = matching_service.spec(options.markets)
        elif name == "risk":
            spec = risk_service.spec(options.markets, options.insurance_account,
                                     partitions=bus.partitions(RISK_IN), adl_ranking=venue(options.venue).adl)
        else:
            spec = liquidation_service.spec(options.markets, options.insurance_account,
                                            venue(options.venue).liquidation)
        await ServiceRunner(spec, bus, options.snapshot_interval_s).run(stop)


async def _serve_gateway(bus: KafkaBus, options: Options, stop: asyncio.Event) -> None:
    from services.gateway.host import GatewayHost, GatewaySettings
    from services.gateway.keys import KeyStore
    from services.gateway.registry import DIALECTS, serving

    keys = KeyStore(bus)
    await keys.start(options.settings.connect_timeout_s)
    host = GatewayHost(bus, options.markets, keys, GatewaySettings(rate_limits=options.rate_limits))
    await host.start()
    ports = {d.name: options.ports.get(d.name, d.default_port) for d in DIALECTS}
    try:
        try:
            async with serving(host, options.gateway_host, ports):
                await stop.wait()
        except OSError as exc:
            raise BusError(f"the gateway cannot listen on {options.gateway_host} (ports "
                           f"{', '.join(f'{name} {port}' for name, port in ports.items())}): {exc}") from None
    finally:
        await host.stop()
        await keys.stop()


async def create_account(options: Options, deposit: str, account: str | None = None) -> tuple[str, str, str]:
    """An account with ``deposit``, and its API key and secret (published on the bus).
    ``account``: its id (a wallet's address for the Hyperliquid dialect); a new one if None."""
    import uuid

    from services.client import Client
    from services.gateway.keys import publish_key

    account = account or f"acct-{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(options.settings, topic_partitions(options.partitions))
    await bus.start()
    try:
        async with Client(bus, options.markets) as client:
            await client.deposit(account, deposit)
        key, secret = await publish_key(bus, account)
    finally:
        await bus.stop()
    return account, key, secret


def run_service(name: str, options: Options) -> None:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
    run_on_loop(_serve(name, options))  # uvloop where it installs (services/runtime/loop.py)


@dataclass
class Participants:
    """How `up` runs the scenario's participants."""

    seed: int | None = None
    rate: float = 1.0
    report_dir: Path | None = None
    dashboard: bool = True


@dataclass
class LoadtestSettings:
    """`perpsim loadtest`: ramp from ``rate`` by ``factor`` every ``step_s`` up to
    ``max_rate``, until p99 latency passes ``p99_limit_ms`` or the rate is not kept up."""

    rate: float = 500.0
    max_rate: float = 50_000.0
    factor: float = 1.5
    step_s: float = 5.0
    p99_limit_ms: float = 100.0


async def _run_participants(options: Options, settings: KafkaSettings, duration_s: float | None,
                            stop: asyncio.Event, children: dict, participants: Participants,
                            start_oracle, folder: Path) -> int:
    from services.sim.dashboard import Dashboard
    from services.sim.live import LiveMarket
    from services.sim.report import write_live_report

    scenario = load_scenario(options.scenario)
    bus = KafkaBus(settings, topic_partitions(options.partitions))
    await bus.start()
    try:
        market = LiveMarket(bus, options.markets, scenario, participants.seed, participants.rate)
        dashboard = Dashboard(market, duration_s or scenario.duration_s, live=participants.dashboard,
                              web_url=options.web_url)

        async def watch_children() -> None:
            while not stop.is_set():
                for name, child in list(children.items()):
                    if child.poll() is not None:
                        log.error("%s exited with code %d; stopping", name, child.returncode)
                        stop.set()
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch_children())
        with held_logs(dashboard.live) as held, dashboard:
            stats = await market.run(duration_s or scenario.duration_s, stop, on_second=dashboard.update,
                                     on_ready=start_oracle)
        watcher.cancel()
        held.replay()
        paths = write_live_report(market, stats, folder, venue=options.venue)
        print(paths["summary.txt"].read_text())
        print(f"report: {paths['report.html']}")
        return 0 if all(child.poll() is None for child in children.values()) else 1
    finally:
        await _stop_bus(bus, "participants", gone=stop.is_set())  # interrupted: a few seconds, not 30


class held_logs:
    """While the live dashboard owns the terminal, this process's log records go to the
    run's log file only (``up.log``, as always) and those of WARNING and above are kept;
    ``replay()`` prints them once the dashboard is gone. Without a dashboard, nothing
    changes."""

    def __init__(self, active: bool):
        self.active = active
        self.kept: list[logging.LogRecord] = []
        self._removed: list[logging.Handler] = []
        self._keeper = _Keeper(self.kept)

    def __enter__(self) -> held_logs:
        if self.active:
            root = logging.getLogger()
            self._removed = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                             and not isinstance(h, logging.FileHandler)]
            for handler in self._removed:
                root.removeHandler(handler)
            root.addHandler(self._keeper)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            root = logging.getLogger()
            root.removeHandler(self._keeper)
            for handler in self._removed:
                root.addHandler(handler)

    def replay(self) -> None:
        for record in self.kept:
            for handler in self._removed:
                handler.handle(record)


class _Keeper(logging.Handler):
    def __init__(self, kept: list):
        super().__init__(logging.WARNING)
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append(record)


LOG_LEVELS = (" level=WARNING ", " level=ERROR ", " level=CRITICAL ")


def report_child_logs(logs: Path, children: dict, shown: int = 20) -> None:
    """After a run whose services logged to files: their warnings and errors on stderr
    (the first ``shown``), and the last lines of any that exited on its own."""
    lines: list[str] = []
    for path in sorted(logs.glob("*.log")):
        if path.name == "up.log":
            continue
        with path.open(errors="replace") as text:
            lines += [f"{path.stem}: {line.rstrip()}" for line in text if any(level in line for level in LOG_LEVELS)]
    for line in lines[:shown]:
        print(line, file=sys.stderr)
    if len(lines) > shown:
        print(f"... {len(lines) - shown} more warnings in {logs}/", file=sys.stderr)
    for name, child in children.items():
        path = logs / f"{name}.log"
        if child.returncode not in (None, 0, -signal.SIGTERM) and path.exists():
            tail = path.read_text(errors="replace").splitlines()[-10:]
            print(f"--- the last lines of {path}:", *tail, sep="\n", file=sys.stderr)


def spawn(command: list[str], **kwargs) -> subprocess.Popen:
    """A child process of `up`, in a session of its own: Ctrl-C in the terminal reaches
    only `up`, which then stops the children in order."""
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
                            **kwargs)


# Stopped in this order: first what brings input (gateway, oracle), then the services,
# so that each service snapshots after it has applied what the others sent it.
STOP_ORDER = (("gateway", "oracle"), ("risk", "matching", "liquidation"))


async def _stop_children(children: dict[str, subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM each stage of ``STOP_ORDER`` and wait for it (killed after ``grace_s``),
    polling, so that a second Ctrl-C meanwhile is heard (``_stop_or_quit``)."""
    for stage in STOP_ORDER:
        chosen = [(name, children[name]) for name in stage if name in children]
        for _, child in chosen:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(child.poll() is None for _, child in chosen):
            await asyncio.sleep(0.05)
        for name, child in chosen:
            if child.poll() is None:
                log.error("%s did not stop within %g s of SIGTERM; killing it", name, grace_s)
                child.kill()
                child.wait()


async def _up(options: Options, duration_s: float | None, on_ready=None,
              participants: Participants | LoadtestSettings | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    children: dict[str, subprocess.Popen] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _stop_or_quit, stop, children)
    loop.add_signal_handler(signal.SIGUSR1, _log_tasks, "up")  # `kill -USR1 <pid>`: what each task waits on
    broker = None
    settings = options.settings
    live = bool(options.scenario) and isinstance(participants, Participants)
    folder = logs = None
    log_handler = None
    if live:  # a run with a report: its folder holds the services' logs too
        from services.sim.report import run_folder

        seed = participants.seed if participants.seed is not None else load_scenario(options.scenario).seed
        folder = run_folder(f"live-{load_scenario(options.scenario).name}-seed{seed}", participants.report_dir)
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        log_handler = logging.FileHandler(logs / "up.log")
        log_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(log_handler)
        log.info("run folder %s (the services log to %s)", folder, logs)
    try:
        if not settings.bootstrap:
            log_file = logs / "broker.log" if logs else (options.state_dir / "broker.log") if options.state_dir else None
            broker = EmbeddedBroker(log_file=log_file)
            settings.bootstrap = await broker.start()
            log.info("embedded broker started at %s", settings.bootstrap)
            children["broker"] = broker.process  # watched with the services: if it dies, `up` stops
        await ensure_topics(settings, topic_partitions(options.partitions))
        from services.gateway.registry import DIALECTS

        ports: dict[str, int] = {}  # chosen here, so that they can be printed
        for dialect in DIALECTS:
            wanted = options.ports.get(dialect.name, dialect.default_port)
            port = wanted
            if port == 0 or port in ports.values() or not _port_free(options.gateway_host, port):
                port = free_port(options.gateway_host)
                while port in ports.values():
                    port = free_port(options.gateway_host)
                if wanted:
                    log.warning("port %d is in use; the gateway's %s API listens on %d instead", wanted,
                                dialect.title, port)
            ports[dialect.name] = port
        log.info("gateway: %s; broker: %s", ", ".join(f"http://{options.gateway_host}:{ports[d.name]} ({d.title} API)"
                                                      for d in DIALECTS), settings.bootstrap)
        options.web_url = f"http://{options.gateway_host}:{ports[DIALECTS[0].name]}/"
        log.info("web view: %s", options.web_url)

        def start(name: str) -> None:
            command = [sys.executable, "-m", "services.cli", name, "--bootstrap", settings.bootstrap,
                       *options.forward, *options.forward_to.get(name, ())]
            if name == "gateway":
                for dialect in DIALECTS:
                    command += [dialect.port_option, str(ports[dialect.name])]
            if logs is None:
                children[name] = spawn(command)
            else:
                with (logs / f"{name}.log").open("ab") as output:
                    children[name] = spawn(command, stdout=output, stderr=subprocess.STDOUT)
            log.info("started %s (pid %d)", name, children[name].pid)

        for name in SERVICES:
            if stop.is_set():
                return 0
            if name == "oracle" and live:
                continue  # started when the participants are ready: the scenario's clock starts with them
            start(name)
        if on_ready is not None:
            on_ready(settings.bootstrap)
        if isinstance(participants, LoadtestSettings):
            from services.sim.loadtest import run_loadtest

            return await run_loadtest(options, settings, stop, participants)
        if live:
            return await _run_participants(options, settings, duration_s, stop, children, participants,
                                           lambda: start("oracle"), folder)
        deadline = time.monotonic() + duration_s if duration_s else None
        while not stop.is_set():
            for name, child in children.items():
                if child.poll() is not None:
                    log.error("%s exited with code %d; stopping", name, child.returncode)
                    stop.set()
            if deadline and time.monotonic() >= deadline:
                stop.set()
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        return 0 if all(child.poll() is None for child in children.values()) else 1
    finally:
        await _stop_children(children)
        if broker is not None:
            broker.stop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
        if logs is not None:
            report_child_logs(logs, children)
            print(f"logs: {logs}", file=sys.stderr)
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()


def _stop_or_quit(stop: asyncio.Event, children: dict[str, subprocess.Popen]) -> None:
    """The first Ctrl-C (or SIGTERM) stops the run in order: the participants stop, the
    services send what they have, snapshot and commit, a partial report is written. A
    second one waits for none of that: every process of the run (the broker too) is killed
    and `up` exits with 130 at once; the services resume from their last snapshots."""
    # printed, not logged: while the dashboard holds the terminal, log lines wait for its end
    if not stop.is_set():
        stop.set()
        print("stopping: the services save their state, then a partial report (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)
        return
    print("stopping at once: every process of the run killed, no report", file=sys.stderr, flush=True)
    for child in children.values():
        if child.poll() is None:
            child.kill()
    for child in children.values():
        child.wait()
    logging.shutdown()
    os._exit(130)


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def run_up(options: Options, duration_s: float | None = None,
           participants: Participants | LoadtestSettings | None = None) -> int:
    return asyncio.run(_up(options, duration_s, participants=participants))
