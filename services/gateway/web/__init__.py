"""The venue's web view: book, trades, chart, funding, fund, liquidations and accounts."""
