"""``python -m exchange``: whether this installation runs the compiled core."""

import exchange
from exchange import matching

print(f"perpsim core: {exchange.BUILD}")
print(f"exchange.matching from {matching.__file__}")
