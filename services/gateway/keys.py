"""API keys: one key and secret per account, on the bus (the compacted ``keys`` topic), so
a gateway on any machine knows every key and no command needs a shared folder.

``perpsim accounts create`` publishes them (``publish_key``; the secret is shown once);
every gateway reads the topic from its start and follows it (``KeyStore``). The topic
holds secrets: the bus is an internal network (docs/services.md, "Who may say what").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid

from schemas import KEYS, SchemaError, codec
from schemas.events import ApiKey
from schemas.topics import refusal
from services.runtime.bus import Bus, BusError

log = logging.getLogger(__name__)


async def publish_key(bus: Bus, account: str) -> tuple[str, str]:
    """A new key and secret for ``account``, written to the bus; returns them."""
    key, secret = secrets.token_hex(32), secrets.token_hex(32)
    message = ApiKey(f"accounts-{uuid.uuid4().hex[:8]}", time.time_ns(), key, secret, account, time.time_ns())
    await bus.send([(KEYS, 0, key.encode(), codec(KEYS).encode(message))])
    return key, secret


AGENT_PREFIX = "agent:"  # a Hyperliquid agent wallet: key "agent:<address>", no secret, its master's account


async def publish_agent(bus: Bus, agent: str, master: str) -> None:
    """Approve ``agent`` (a wallet address) to act for ``master``: written to the bus like
    a key, so every gateway, restarted too, knows it."""
    key = AGENT_PREFIX + agent.lower()
    message = ApiKey(f"accounts-{uuid.uuid4().hex[:8]}", time.time_ns(), key, "", master, time.time_ns())
    await bus.send([(KEYS, 0, key.encode(), codec(KEYS).encode(message))])


class KeyStore:
    """Every key published so far, and those published while it runs."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self._keys: dict[str, tuple[str, str]] = {}
        self._reader: asyncio.Task | None = None
        self._loaded = asyncio.Event()

    async def start(self, timeout_s: float = 15.0) -> None:
        """Read what is there now, then follow in the background."""
        self._reader = asyncio.create_task(self._follow())
        await asyncio.wait_for(self._loaded.wait(), timeout_s)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass

    async def _follow(self) -> None:
        position = 0
        while True:
            try:
                position = await self._read_from(position)
            except BusError as exc:  # the broker away: keep the keys known, try again
                log.warning("API keys not refreshed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self._loaded.set()
            await asyncio.sleep(0.2)

    async def _read_from(self, position: int) -> int:
        """Read the keys from ``position`` to the end; returns the new position."""
        keys_codec = codec(KEYS)
        begin, _ = await self.bus.offsets(KEYS, 0)
        position = max(position, begin)
        for record in await self.bus.read(KEYS, 0, position):
            try:
                messages = keys_codec.decode(record.value)
            except SchemaError as exc:
                log.warning("keys offset %d skipped: %s", record.offset, exc)
                continue
            for message in messages:
                if refusal(KEYS, message) is None:
                    self._keys[message.key] = (message.secret, message.account)
            position = record.offset + 1
        return position

    async def known(self, key: str, timeout_s: float = 5.0) -> None:
        """Wait until ``key`` (just published) has been read."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while key not in self._keys:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"API key {key[:8]}... not seen on the bus within {timeout_s:g} s")
            await asyncio.sleep(0.02)

    def lookup(self, key: str) -> tuple[str, str] | None:
        """(secret, account) of a key, or None."""
        return self._keys.get(key)

    def master(self, agent: str) -> str | None:
        """The account an approved agent wallet acts for, or None."""
        found = self._keys.get(AGENT_PREFIX + agent.lower())
        return found[1] if found else None
