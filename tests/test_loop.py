"""The services' event loop: uvloop where it installs, asyncio's on request."""

from __future__ import annotations

import asyncio

from services.runtime import loop


async def running_loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_services_run_on_uvloop_unless_asked_for_asyncio(monkeypatch):
    monkeypatch.delenv("PERPSIM_LOOP", raising=False)
    assert loop.loop_name() == "uvloop"  # a dependency on Linux
    assert loop.run(running_loop_module()).startswith("uvloop")
    monkeypatch.setenv("PERPSIM_LOOP", "asyncio")
    assert loop.loop_name() == "asyncio"
    assert loop.run(running_loop_module()).startswith("asyncio")
