"""API keys: one key and secret per account, in a JSON file the gateway reads.

``perpsim accounts create`` writes them (the secret is shown once); the file maps each key
to its secret and account. Treat it as a secret.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


class KeyStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._keys: dict[str, dict[str, str]] = {}
        if self.path.exists():
            self._keys = json.loads(self.path.read_text())

    def create(self, account: str) -> tuple[str, str]:
        key, secret = secrets.token_hex(32), secrets.token_hex(32)
        self._keys[key] = {"secret": secret, "account": account}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._keys, indent=1))
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)
        return key, secret

    def lookup(self, key: str) -> tuple[str, str] | None:
        """(secret, account) of a key, or None."""
        entry = self._keys.get(key)
        if entry is None and self.path.exists():  # keys created since we started
            self._keys = json.loads(self.path.read_text())
            entry = self._keys.get(key)
        return (entry["secret"], entry["account"]) if entry else None
