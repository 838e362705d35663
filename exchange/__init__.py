"""The pure, deterministic domain core: no asyncio, no Kafka, no clock, no I/O.

Its hot path, ``COMPILED_MODULES`` (markets, the books, matching, triggers, accounts, the
liquidation index and risk), is compiled with mypyc when the package is installed
(setup.py); ``BUILD`` says whether this process runs it compiled (``python -m exchange``
prints it). The same modules run interpreted, from the same source, when

- ``PERPSIM_PURE=1`` is set (to compare, or to debug with pdb),
- they were not compiled (no C compiler, ``PERPSIM_COMPILE=0`` at install time), or
- a source differs from what was compiled (edited since ``pip install -e .``; setup.py writes
  the sources' hashes to ``compiled.json``): the compiled modules would run old code, so all
  of them run from source until the next install.

They are compiled as one group that calls across modules directly, so they are either
all compiled or all interpreted, never mixed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# dotted names under ``exchange``; a sub-package's ``__init__`` stays interpreted
COMPILED_MODULES = ("markets", "book", "triggers", "conditional", "matching", "reference_book", "accounts",
                    "liquidation_index", "risk.partition", "risk.adl", "risk.orders", "risk.commands", "risk.detection",
                    "risk.settlement", "risk.engine")
_HERE = Path(__file__).parent


def _build() -> str:
    if os.environ.get("PERPSIM_PURE", "") not in ("", "0"):
        return "pure (PERPSIM_PURE is set)"
    for name in COMPILED_MODULES:
        if not any(_path(name, suffix).exists() for suffix in EXTENSION_SUFFIXES):
            return "pure (not compiled: see setup.py)"
    try:
        built = json.loads((_HERE / "compiled.json").read_text())
    except (OSError, ValueError):  # setup.py writes it once every module compiled
        return "pure (no record of a complete build; `pip install -e .` compiles the core again)"
    stale = [_source(name) for name in COMPILED_MODULES if built.get(_source(name)) != _hash(_path(name, ".py"))]
    if stale:
        return (f"pure ({', '.join(stale)} changed since the core was compiled; `pip install -e .` "
                "compiles it again)")
    return "compiled (mypyc)"


def _source(name: str) -> str:
    """A compiled module's source, relative to the package, as setup.py records it."""
    return name.replace(".", "/") + ".py"


def _path(name: str, suffix: str) -> Path:
    return _HERE / (name.replace(".", "/") + suffix)


def _hash(path: Path) -> str:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()  # as setup.py writes it
    except OSError:
        return ""


class _FromSource:
    """Imports the compiled modules from their ``.py`` files (ahead of the extension)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix = __name__ + "."
        if name.startswith(prefix) and name[len(prefix):] in COMPILED_MODULES:
            return importlib.util.spec_from_file_location(name, _path(name[len(prefix):], ".py"))
        return None


BUILD = _build()
COMPILED = BUILD.startswith("compiled")
if not COMPILED and not BUILD.startswith("pure (not compiled"):
    sys.meta_path.insert(0, _FromSource)  # type: ignore[arg-type]
