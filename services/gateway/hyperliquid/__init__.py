"""Hyperliquid's API dialect over the gateway's projection and ledger (docs/gateway.md)."""
