"""The venue front: one projection of market (``projection``) and account (``ledger``)
state folded from the bus, dialect-free, and one folder per API dialect over it."""
