"""The Binance USD-M futures ("fapi") compatible gateway, so that unmodified ccxt bots
trade on perpsim. See docs/gateway.md."""
