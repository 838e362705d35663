"""Which build of the core a process runs (exchange/__init__.py): compiled when the
extensions match their sources, from source when asked to, when not compiled, or when a
source changed since it was compiled; never a mix."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import exchange

ROOT = Path(__file__).resolve().parent.parent
MODULES = exchange.COMPILED_MODULES

PROBE = """
import exchange, exchange.matching, exchange.book, exchange.risk
print(exchange.BUILD)
print(exchange.matching.__file__)
print(exchange.book.__file__)
print(exchange.risk.engine.__file__)
"""


def source(name: str) -> str:
    """A compiled module's source file, relative to the package (``risk.engine``: ``risk/engine.py``)."""
    return name.replace(".", "/") + ".py"


def fake_install(tmp_path: Path, manifest: dict[str, str] | None) -> Path:
    """A copy of the sources beside stand-ins for the compiled modules that cannot load:
    a process that imports one of them fails, so the probe shows which files it used."""
    root = tmp_path / "install"
    shutil.copytree(ROOT / "exchange", root / "exchange",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "compiled.json", "__pycache__"))
    shutil.copytree(ROOT / "schemas", root / "schemas", ignore=shutil.ignore_patterns("__pycache__"))
    for name in MODULES:
        (root / "exchange" / (name.replace(".", "/") + EXTENSION_SUFFIXES[0])).write_bytes(b"not a shared object")
    if manifest is not None:
        (root / "exchange" / "compiled.json").write_text(json.dumps(manifest))
    return root


def probe(root: Path, **env: str) -> list[str]:
    environment = {**os.environ, "PYTHONPATH": str(root)}
    environment.pop("PERPSIM_PURE", None)
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def hashes(root: Path) -> dict[str, str]:
    return {source(name): hashlib.blake2b((root / "exchange" / source(name)).read_bytes(), digest_size=16).hexdigest()
            for name in MODULES}


def test_a_source_edited_since_it_was_compiled_runs_every_module_from_source(tmp_path: Path) -> None:
    root = fake_install(tmp_path, None)
    manifest = hashes(root)
    (root / "exchange" / "compiled.json").write_text(json.dumps(manifest))
    with open(root / "exchange" / "matching.py", "a") as source:
        source.write("\n# edited\n")
    build, matching, book, risk = probe(root)
    assert build.startswith("pure (matching.py changed since the core was compiled")
    assert matching.endswith("exchange/matching.py") and book.endswith("exchange/book.py")  # not a mix
    assert risk.endswith("exchange/risk/engine.py")  # a sub-package's modules too


def test_a_source_edited_in_a_sub_package_runs_every_module_from_source(tmp_path: Path) -> None:
    root = fake_install(tmp_path, None)
    (root / "exchange" / "compiled.json").write_text(json.dumps(hashes(root)))
    with open(root / "exchange" / "risk" / "settlement.py", "a") as edited:
        edited.write("\n# edited\n")
    build, matching, _, risk = probe(root)
    assert build.startswith("pure (risk/settlement.py changed since the core was compiled")
    assert matching.endswith("exchange/matching.py") and risk.endswith("exchange/risk/engine.py")


def test_perpsim_pure_runs_the_sources_even_when_they_match(tmp_path: Path) -> None:
    root = fake_install(tmp_path, None)
    (root / "exchange" / "compiled.json").write_text(json.dumps(hashes(root)))
    build, matching, book, risk = probe(root, PERPSIM_PURE="1")
    assert build == "pure (PERPSIM_PURE is set)"
    assert matching.endswith(".py") and book.endswith(".py") and risk.endswith(".py")


def test_no_record_of_a_build_is_not_taken_for_a_good_one(tmp_path: Path) -> None:
    root = fake_install(tmp_path, None)  # extensions but no compiled.json: a build that failed
    build, matching, *_ = probe(root)
    assert build.startswith("pure (no record of a complete build")
    assert matching.endswith(".py")


def test_matching_sources_are_reported_compiled_without_loading_anything(tmp_path: Path) -> None:
    root = fake_install(tmp_path, None)
    (root / "exchange" / "compiled.json").write_text(json.dumps(hashes(root)))
    environment = {**os.environ, "PYTHONPATH": str(root)}
    environment.pop("PERPSIM_PURE", None)
    done = subprocess.run([sys.executable, "-c", "import exchange; print(exchange.BUILD)"], cwd=root,
                          env=environment, capture_output=True, text=True)
    assert done.stdout.strip() == "compiled (mypyc)", done.stderr


def test_a_compiled_process_runs_the_extensions() -> None:
    """Where the build must have compiled (CI sets ``PERPSIM_EXPECT_COMPILED``), it did."""
    if not exchange.COMPILED:
        assert not os.environ.get("PERPSIM_EXPECT_COMPILED"), f"the core should be compiled: {exchange.BUILD}"
        pytest.skip(f"this process runs the core from source: {exchange.BUILD}")
    import importlib

    for name in MODULES:
        module = importlib.import_module(f"exchange.{name}")
        assert not module.__file__.endswith(".py"), module.__file__
