"""The venue's web view (``/`` on the gateway's Binance port), live over a WebSocket.

Per market: the order book ladder, recent trades, a chart of mark, index and last price
with the liquidations marked by margin mode, funding and open interest; the insurance
fund; a feed of liquidations by mode and outcome; and an account view (an account id, a
wallet address or an API key): balances, positions with margin mode, leverage,
liquidation and bankruptcy prices, open and conditional orders, fills and income.

Everything comes from the gateway's own projection and ledger (what the API dialects
serve), so the page and a bot see the same venue. ``GET /web/api/state`` and
``GET /web/api/account?id=...`` answer JSON; ``/web/ws`` pushes the state twice a second,
and the account the page asked for (``{"account": "..."}``). The page is plain HTML,
CSS and JavaScript from ``static/`` (no build step), the chart drawn on a canvas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from exchange.core import usdc
from schemas.enums import IncomeKind, LiquidationStage, MarginMode, Side
from schemas.events import LiquidationOutcome, MarkPrice
from services.gateway.host import BookLevels, GatewayHost
from services.gateway.ledger import UserEvent, money

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PUSH_EVERY_S = 0.5
SERIES_KEPT = 4000  # chart points per market (a sample at most every SAMPLE_MS)
SAMPLE_MS = 250
FEED_KEPT = 200
DEPTH = 12


def _side(signed: int) -> str:
    return "long" if signed > 0 else "short"


class WebView:
    """The web view of a running gateway host: one of its taps (market data), and a
    listener of its client (every account's liquidations)."""

    def __init__(self, host: GatewayHost):
        self.host = host
        self.markets = host.markets
        self.series: dict[str, deque] = {m: deque(maxlen=SERIES_KEPT) for m in self.markets}  # [ms, mark, index, last]
        self.marked: dict[str, deque] = {m: deque(maxlen=FEED_KEPT) for m in self.markets}  # [ms, price, mode]
        self.feed: deque = deque(maxlen=FEED_KEPT)  # liquidation steps, newest last
        self._last_market: dict[str, str] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        host.taps.append(self)
        host.client.listen(self._account_event)

    def routes(self) -> list:
        return [web.get("/", self.index), web.get("/web", self.index), web.static("/web/static", STATIC),
                web.get("/web/api/state", self.state_json), web.get("/web/api/account", self.account_json),
                web.get("/web/ws", self.socket)]

    async def close(self) -> None:
        for socket in list(self.sockets):
            await socket.close()
        if self in self.host.taps:
            self.host.taps.remove(self)

    # ---------------------------------------------------------------- the taps

    def listening(self, account: str) -> bool:
        return False  # it reads the ledger's state; it needs no per-account stream events

    def user(self, account: str, event: UserEvent) -> None:
        return None

    def market(self, message: object, before: BookLevels | None) -> None:
        if not isinstance(message, MarkPrice) or message.market not in self.series:
            return
        state = self.host.projection.markets[message.market]
        last = state.trades[-1][1] if state.trades else 0
        now = message.ts // 1_000_000 or int(time.time() * 1000)
        series = self.series[message.market]
        point = [now, message.mark_price, message.index_price, last]
        if series and now - series[-1][0] < SAMPLE_MS:
            series[-1] = point
        else:
            series.append(point)

    def _account_event(self, message: Any) -> None:
        if not isinstance(message, LiquidationOutcome):
            return
        market = message.market or next((p.market for p in self._snapshot_positions(message.account)), "") \
            or self._last_market.get(message.account, "")  # a cross bucket's close-out: the market it was in
        self._last_market[message.account] = market
        now = message.ts // 1_000_000 or int(time.time() * 1000)
        spec = self.markets.get(market)
        mark = self.host.projection.markets[market].mark if spec else 0
        self.feed.append({"t": now, "account": message.account, "market": market,
                          "mode": message.mode.name.lower(), "stage": message.stage.name.lower(),
                          "equity": money(message.equity), "mark": spec.format_price(mark) if spec and mark else ""})
        if message.stage is LiquidationStage.TRIGGERED and spec and mark:
            self.marked[market].append([now, mark, message.mode.name.lower()])

    def _snapshot_positions(self, account: str) -> list:
        state = self.host.ledger.accounts.get(account)
        return list(state.snapshot.positions) if state is not None and state.snapshot is not None else []

    # ------------------------------------------------------------------- state

    def state(self) -> dict:
        fund = self.host.ledger.accounts.get("insurance")
        interest: dict[str, int] = {m: 0 for m in self.markets}
        for account in self.host.ledger.accounts.values():
            for position in account.snapshot.positions if account.snapshot is not None else ():
                if position.signed_size > 0 and position.market in interest:
                    interest[position.market] += position.signed_size
        markets = []
        for symbol, spec in self.markets.items():
            state = self.host.projection.markets[symbol]
            bids, asks = self.host.projection.depth(symbol, DEPTH)
            price, size = spec.format_price, spec.format_size
            markets.append({
                "symbol": symbol, "base": spec.base, "tick": str(spec.tick_size),
                "mark": price(state.mark) if state.mark else None, "index": price(state.index) if state.index else None,
                "last": price(state.trades[-1][1]) if state.trades else None,
                "funding_rate": f"{state.funding_rate_ppb / 1e7:.4f}%",
                "funding_history": [[ts // 1_000_000, f"{rate / 1e7:.4f}%"] for ts, rate, _ in
                                    list(state.funding_history)[-10:]],
                "open_interest": size(interest[symbol]),
                "bids": [[price(p), size(s)] for p, s in bids], "asks": [[price(p), size(s)] for p, s in asks],
                "trades": [{"t": ts // 1_000_000, "price": price(p), "size": size(s),
                            "side": "buy" if side == int(Side.BUY) else "sell"}
                           for _, p, s, side, ts in list(state.trades)[-30:]][::-1],
                "series": [[t, float(price(m)) if m else None, float(price(i)) if i else None,
                            float(price(last)) if last else None] for t, m, i, last in self.series[symbol]],
                "liquidations": [[t, float(price(p)), mode] for t, p, mode in self.marked[symbol]],
            })
        return {"time": int(time.time() * 1000), "markets": markets,
                "insurance_fund": usdc(fund.snapshot.balance if fund is not None and fund.snapshot else 0, exact=False),
                "liquidations": list(self.feed)[-50:][::-1], "accounts": len(self.host.ledger.accounts)}

    def resolve(self, wanted: str) -> str | None:
        """An account id, a wallet address (any case) or an API key, to the account."""
        wanted = wanted.strip()
        ledger = self.host.ledger.accounts
        for candidate in (wanted, wanted.lower()):
            if candidate in ledger and ledger[candidate].snapshot is not None:
                return candidate
        keys = self.host.keys
        found = keys.lookup(wanted) if keys is not None else None
        return found[1] if found is not None else None

    def account(self, account: str) -> dict:
        ledger = self.host.ledger
        snapshot = ledger.valued(account)
        positions = []
        for p in snapshot.positions:
            spec = self.markets[p.market]
            entry = p.entry_value / (abs(p.signed_size) * spec.value_per_tick_lot) if p.signed_size else 0
            positions.append({
                "market": p.market, "side": _side(p.signed_size), "size": spec.format_size(abs(p.signed_size)),
                "mode": p.mode.name.lower(), "leverage": p.leverage,
                "entry": spec.format_price(round(entry)), "mark": spec.format_price(p.mark_price),
                "unrealized_pnl": money(p.unrealized_pnl),
                "margin": money(p.isolated_margin + p.unrealized_pnl if p.mode is MarginMode.ISOLATED
                                else p.initial_margin),
                "liquidation": spec.format_price(p.liquidation_price) if p.liquidation_price else None,
                "bankruptcy": spec.format_price(p.bankruptcy_price) if p.bankruptcy_price else None})
        orders = [{"id": o.order_id, "market": o.market.symbol, "side": o.side.name.lower(), "kind": o.kind.name,
                   "price": o.market.format_price(o.price) if o.price else "market",
                   "size": o.market.format_size(o.size), "filled": o.market.format_size(o.executed),
                   "reduce_only": o.reduce_only} for o in ledger.open_orders(account)]
        conditionals = [{"id": c.order_id, "market": c.market.symbol, "side": c.side.name.lower(),
                         "condition": c.condition.name.lower(), "kind": c.kind.name,
                         "trigger": c.market.format_price(c.trigger_price) if c.trigger_price else "",
                         "price": c.market.format_price(c.price) if c.price else "market",
                         "size": "position" if c.close_position else c.market.format_size(c.size),
                         "source": c.source.name.lower(), "status": c.status.name.lower()} for c in ledger.open_conditionals(account)]
        state = ledger.account(account)
        fills = [{"t": t.time_ms, "market": t.market.symbol, "side": t.side.name.lower(),
                  "price": t.market.format_price(t.price), "size": t.market.format_size(t.size),
                  "role": "maker" if t.maker else "taker", "fee": money(t.commission), "realized": money(t.realized)}
                 for t in list(state.trades)[-50:]][::-1]
        income = [{"t": item.ts // 1_000_000, "kind": IncomeKind(item.kind).name.lower(), "market": item.market,
                   "amount": money(item.amount)} for _, item in list(state.income)[-50:]][::-1]
        return {"account": account, "balance": money(snapshot.balance),
                "available": money(snapshot.available_to_trade), "withdrawable": money(snapshot.withdrawable),
                "positions": positions, "orders": orders, "conditionals": conditionals, "fills": fills,
                "income": income}

    # ------------------------------------------------------------------- HTTP

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def state_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def account_json(self, request: web.Request) -> web.Response:
        wanted = request.query.get("id", "")
        account = self.resolve(wanted) if wanted else None
        if account is None:
            return web.json_response({"error": f"no account {wanted!r} here (an account id, a wallet address "
                                               "or an API key)"}, status=404)
        return web.json_response(self.account(account))

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        self.sockets.add(ws)
        watched: dict[str, str | None] = {"account": None}

        async def push() -> None:
            while not ws.closed:
                message: dict = {"state": self.state()}
                if watched["account"]:
                    account = self.resolve(watched["account"])
                    message["account"] = self.account(account) if account else {
                        "error": f"no account {watched['account']!r} here"}
                await ws.send_str(json.dumps(message))
                await asyncio.sleep(PUSH_EVERY_S)

        pusher = asyncio.create_task(push())
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    try:
                        watched["account"] = str(json.loads(message.data).get("account") or "") or None
                    except (ValueError, AttributeError):
                        await ws.send_str(json.dumps({"error": "send {\"account\": \"...\"}"}))
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            pusher.cancel()
            self.sockets.discard(ws)
        return ws
