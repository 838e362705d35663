"""Adding an API dialect is one folder and one registry line: a throwaway "echo" dialect,
defined here and never shipped, is served on its own port through the registry beside the
real ones, reads the host's ledger like them, and gets its port option on the command line."""

from __future__ import annotations

import asyncio

import aiohttp
import click
from aiohttp import web
from click.testing import CliRunner

from exchange.markets import default_markets
from schemas import topic_partitions
from services.cli import port_options
from services.client import Client
from services.gateway import registry
from services.gateway.host import GatewayHost
from services.gateway.ledger import money
from services.risk import spec as risk_spec
from services.runtime.memory import MemoryBus
from services.runtime.runner import ServiceRunner


class Echo:
    """A dialect that answers an account's balance as the host's ledger knows it."""

    name = "echo"
    title = "Echo"
    port_option = "--echo-port"
    default_port = 0
    paths = "/echo/{account}"

    def application(self, host: GatewayHost) -> web.Application:
        async def balance(request: web.Request) -> web.Response:
            account = request.match_info["account"]
            return web.json_response({"account": account, "balance": money(host.ledger.snapshot(account).balance)})

        app = web.Application()
        app.add_routes([web.get("/echo/{account}", balance)])
        return app


async def test_a_dialect_added_to_the_registry_is_served_on_its_own_port(monkeypatch):
    monkeypatch.setattr(registry, "DIALECTS", (*registry.DIALECTS, Echo()))  # the one registry line
    markets = default_markets()
    bus = MemoryBus(topic_partitions(1))
    stop = asyncio.Event()
    risk = asyncio.create_task(ServiceRunner(risk_spec(markets, partitions=1), bus).run(stop))
    host = GatewayHost(bus, markets)
    await host.start()
    client = Client(bus, markets)
    await client.start()
    try:
        await client.deposit("alice", "1234.5")
        for _ in range(200):  # the ledger folds account.events as they come
            if host.ledger.snapshot("alice").balance:
                break
            await asyncio.sleep(0.01)
        async with registry.serving(host, "127.0.0.1", {}) as ports, aiohttp.ClientSession() as session:
            assert set(ports) == {"binance", "hyperliquid", "echo"}
            assert len(set(ports.values())) == 3  # each on a port of its own
            async with session.get(f"http://127.0.0.1:{ports['echo']}/echo/alice") as answer:
                assert await answer.json() == {"account": "alice", "balance": "1234.500000"}
            async with session.get(f"http://127.0.0.1:{ports['binance']}/fapi/v1/ping") as answer:
                assert answer.status == 200  # the others are served as before
            async with session.get(f"http://127.0.0.1:{ports['echo']}/fapi/v1/ping") as answer:
                assert answer.status == 404  # and the echo port serves the echo dialect only
    finally:
        await client.stop()
        await host.stop()
        stop.set()
        await risk


def test_each_dialect_of_the_registry_gets_a_port_option():
    @click.command()
    @click.pass_context
    def command(ctx, **params):
        click.echo(sorted(params.items()))

    for option in reversed(port_options((*registry.DIALECTS, Echo()))):
        command = option(command)
    assert "--echo-port" in CliRunner().invoke(command, ["--help"]).output
    result = CliRunner().invoke(command, ["--echo-port", "9999", "--hyperliquid-port", "7"])
    assert result.output.strip() == "[('port_binance', 8080), ('port_echo', 9999), ('port_hyperliquid', 7)]"
