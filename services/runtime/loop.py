"""The event loop a service runs on: uvloop (libuv) where it is installed, else asyncio's.

``PERPSIM_LOOP=asyncio`` chooses asyncio's own loop (to compare, or where uvloop
misbehaves); ``bench.e2e`` runs the services on both in one run and prints the ratio.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any


def loop_name() -> str:
    if os.environ.get("PERPSIM_LOOP", "uvloop") == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(main)`` on the chosen loop."""
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
