"""The Binance USD-M futures ("fapi") dialect, so that unmodified ccxt bots trade on
perpsim: its REST routes, WebSocket streams, wire formats, errors and signing. See
docs/gateway.md."""
