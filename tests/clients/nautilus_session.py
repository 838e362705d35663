"""A nautilus_trader node on perpsim's Binance dialect, as a user configures it: its own
Binance Futures adapter (data and execution clients) with the base URLs pointed at the
gateway. Run by tests/integration/test_nautilus.py with the interpreter of a virtualenv
that holds nautilus_trader (tests/clients/nautilus-requirements.txt), never imported by
perpsim.

It writes what it sees as JSON lines to the file ``--events`` names (nautilus's log, from
threads of its own, shares stdout and stderr), for the test to check against the venue's
own answers.

``--phase open``: a market buy of 2 SOL, a limit buy resting below the book that is then
cancelled, a stop-market order (Binance answers -4120 on /fapi/v1/order since December
2025, as nautilus_trader 1.221 sends it: the order is rejected), a reduce-only market sell
of 1; then the node stops, one SOL long.

``--phase resume``: a new node on the same account reconciles the position and the
account; it waits for the position to close (the test gaps the price through its
liquidation price) and says what nautilus saw: the liquidation's fills (Binance's
``autoclose-`` orders) and the account after them."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from decimal import Decimal

from nautilus_trader.adapters.binance import (
    BINANCE,
    BinanceAccountType,
    BinanceDataClientConfig,
    BinanceExecClientConfig,
    BinanceLiveDataClientFactory,
    BinanceLiveExecClientFactory,
)
from nautilus_trader.config import (
    InstrumentProviderConfig,
    LiveExecEngineConfig,
    LoggingConfig,
    StrategyConfig,
    TradingNodeConfig,
)
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.enums import OrderSide, TimeInForce, TriggerType, order_side_to_str
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy

SOL = InstrumentId.from_str("SOLUSDT-PERP.BINANCE")


EVENTS = None  # the open events file


def say(event: str, **fields) -> None:
    EVENTS.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    EVENTS.flush()


class SessionConfig(StrategyConfig, frozen=True):
    phase: str = "open"


class Session(Strategy):
    def __init__(self, config: SessionConfig, stop_node):
        super().__init__(config)
        self.phase = config.phase
        self.stop_node = stop_node
        self.step = "start"
        self.quotes = 0
        self.trades = 0

    # ------------------------------------------------------------------ what nautilus sees

    def position(self) -> str:
        """The net position nautilus holds in SOL (signed, base units)."""
        net = sum((Decimal(str(p.signed_qty)) for p in self.cache.positions_open(instrument_id=SOL)), Decimal(0))
        return str(net)

    def account_state(self) -> dict:
        account = self.portfolio.account(SOL.venue)
        if account is None:
            return {}
        return {"total": str(account.balance_total(USDT).as_decimal()),
                "free": str(account.balance_free(USDT).as_decimal())}

    def open_orders(self) -> list[dict]:
        return [{"id": str(o.venue_order_id), "side": o.side_string(), "type": o.type_string(),
                 "quantity": str(o.quantity), "price": str(getattr(o, "price", ""))}
                for o in self.cache.orders_open(instrument_id=SOL)]

    # ------------------------------------------------------------------ the session

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(SOL)
        if self.instrument is None:
            say("error", detail="SOLUSDT-PERP.BINANCE was not loaded")
            self.stop_node()
            return
        say("started", phase=self.phase, instrument=str(self.instrument.id),
            price_increment=str(self.instrument.price_increment), size_increment=str(self.instrument.size_increment),
            position=self.position(), orders=self.open_orders(), account=self.account_state())
        self.subscribe_quote_ticks(SOL)
        self.subscribe_trade_ticks(SOL)
        if self.phase == "resume":
            self.step = "waiting for the position to close"
            say("waiting", position=self.position())
            self.watch()

    def watch(self) -> None:
        """Resumed, the position is reconciled as an external one (not this strategy's: no
        position event reaches ``on_position_closed``); what nautilus holds is read from its
        cache every half second until it is flat."""
        if self.step != "waiting for the position to close":
            return
        if Decimal(self.position()) == 0:
            self.step = "closed"
            say("position_closed", position=self.position(), account=self.account_state(),
                fills=[{"side": order_side_to_str(f.order_side), "quantity": str(f.last_qty), "price": str(f.last_px),
                        "client_order_id": str(f.client_order_id)}
                       for order in self.cache.orders(instrument_id=SOL) for f in order.events
                       if type(f).__name__ == "OrderFilled" and str(f.client_order_id).startswith("autoclose-")])
            self.finish()
            return
        asyncio.get_running_loop().call_later(0.5, self.watch)

    def on_quote_tick(self, tick) -> None:
        self.quotes += 1
        if self.quotes == 1:
            say("quote", bid=str(tick.bid_price), ask=str(tick.ask_price))
        if self.phase == "open" and self.step == "start":
            self.step = "entry"
            self.submit_order(self.order_factory.market(SOL, OrderSide.BUY, self.instrument.make_qty(2)))

    def on_trade_tick(self, tick) -> None:
        self.trades += 1

    def on_order_filled(self, event) -> None:
        say("filled", client_order_id=str(event.client_order_id), venue_order_id=str(event.venue_order_id),
            side=order_side_to_str(event.order_side), quantity=str(event.last_qty), price=str(event.last_px),
            commission=str(event.commission), trade_id=str(event.trade_id), position=self.position())
        if self.step == "entry":
            self.step = "resting"
            bid = self.cache.quote_tick(SOL).bid_price.as_decimal()
            self.submit_order(self.order_factory.limit(SOL, OrderSide.BUY, self.instrument.make_qty(1),
                                                       self.instrument.make_price(bid * Decimal("0.97"))))
        elif self.step == "exit":
            self.step = "done"
            self.finish()

    def on_order_accepted(self, event) -> None:
        say("accepted", client_order_id=str(event.client_order_id), venue_order_id=str(event.venue_order_id),
            orders=self.open_orders())
        if self.step == "resting":
            self.step = "cancel"
            self.cancel_order(self.cache.order(event.client_order_id))

    def on_order_canceled(self, event) -> None:
        say("canceled", client_order_id=str(event.client_order_id), orders=self.open_orders())
        if self.step == "cancel":
            self.step = "stop"
            trigger = self.instrument.make_price(self.cache.quote_tick(SOL).bid_price.as_decimal() * Decimal("0.9"))
            self.submit_order(self.order_factory.stop_market(SOL, OrderSide.SELL, self.instrument.make_qty(1), trigger,
                                                             trigger_type=TriggerType.MARK_PRICE, reduce_only=True,
                                                             time_in_force=TimeInForce.GTC))

    def on_order_rejected(self, event) -> None:
        say("rejected", client_order_id=str(event.client_order_id), reason=str(event.reason))
        if self.step == "stop":
            self.step = "exit"
            self.submit_order(self.order_factory.market(SOL, OrderSide.SELL, self.instrument.make_qty(1),
                                                        reduce_only=True))


    def finish(self) -> None:
        """What nautilus holds two seconds after the last fill (the venue's ACCOUNT_UPDATE
        of it arrives beside the fill), then the node stops."""
        def done() -> None:
            say("done", position=self.position(), orders=self.open_orders(), account=self.account_state(),
                quotes=self.quotes, trades=self.trades)
            self.stop_node()

        asyncio.get_running_loop().call_later(2.0, done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", required=True, help="the gateway's Binance dialect, http://HOST:PORT")
    parser.add_argument("--ws", required=True, help="the same, ws://HOST:PORT")
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--phase", choices=("open", "resume"), default="open")
    parser.add_argument("--events", required=True, help="where the JSON lines go")
    args = parser.parse_args()
    global EVENTS
    EVENTS = open(args.events, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole session

    def client_config(kind):
        return kind(api_key=args.key, api_secret=args.secret, account_type=BinanceAccountType.USDT_FUTURES,
                    base_url_http=args.http, base_url_ws=args.ws,
                    instrument_provider=InstrumentProviderConfig(load_all=True))

    config = TradingNodeConfig(
        trader_id="PERPSIM-001",
        logging=LoggingConfig(log_level="INFO", log_colors=False),
        exec_engine=LiveExecEngineConfig(reconciliation=True, reconciliation_lookback_mins=1440),
        data_clients={BINANCE: client_config(BinanceDataClientConfig)},
        exec_clients={BINANCE: client_config(BinanceExecClientConfig)},
        timeout_connection=30.0,
        timeout_reconciliation=20.0,
        timeout_portfolio=10.0,
        timeout_disconnection=10.0,
        timeout_post_stop=2.0,
    )
    node = TradingNode(config=config)
    node.add_data_client_factory(BINANCE, BinanceLiveDataClientFactory)
    node.add_exec_client_factory(BINANCE, BinanceLiveExecClientFactory)
    node.trader.add_strategy(Session(SessionConfig(phase=args.phase), stop_node=node.stop))
    node.build()
    try:
        node.run()
    finally:
        node.dispose()
    say("stopped")


if __name__ == "__main__":
    sys.exit(main())
