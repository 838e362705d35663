"""Compiles the matching core with mypyc when it can; perpsim is pure Python when it cannot.

Everything else about the package is in pyproject.toml. ``pip install`` (editable or not)
builds the modules ``exchange.COMPILED_MODULES`` names (the books, matching, triggers,
accounts, the liquidation index and the ``exchange.risk`` package) as C extensions from
the same typed source (docs/matching.md, "Compiled core"). Where mypyc or a C compiler is
missing, or ``PERPSIM_COMPILE=0`` is set, the build goes on without them and the same
modules run interpreted; ``python -m exchange`` says which one an installation runs.
"""

import ast
import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


def compiled_modules() -> list[str]:
    """``exchange.COMPILED_MODULES``, read from its source (the package is not importable
    in pip's build environment), so that the list lives in one place."""
    tree = ast.parse(Path(__file__).with_name("exchange").joinpath("__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED_MODULES" for t in node.targets):
            return ["exchange/" + name.replace(".", "/") + ".py" for name in ast.literal_eval(node.value)]
    raise SystemExit("setup.py: exchange/__init__.py has no COMPILED_MODULES")


COMPILED = compiled_modules()
# the hashes of the sources as mypyc read them, taken before it translates them: a source
# edited while the C compiles (a minute) must not be recorded as the one compiled
SOURCE_HASHES: dict[str, str] = {}


def compiled_core() -> list:
    if os.environ.get("PERPSIM_COMPILE", "1") == "0":
        print("perpsim: PERPSIM_COMPILE=0, the core stays pure Python", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("perpsim: mypyc is not installed, the core stays pure Python", file=sys.stderr)
        return []
    # the sources mypyc reads, by their path in the package (exchange/__init__.py: _source)
    SOURCE_HASHES.update({path.removeprefix("exchange/"): source_hash(path) for path in COMPILED})
    try:
        extensions = mypycify(COMPILED, opt_level="3", group_name="perpsim_core")
    except SystemExit:  # mypy's errors are printed above
        print("perpsim: mypyc's type check of the core failed (above); it stays pure Python", file=sys.stderr)
        return []
    except Exception as error:
        print(f"perpsim: mypyc could not compile the core ({error}); it stays pure Python", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # no C compiler: a warning and the pure modules, not a failed install
    return extensions


class BuildCore(build_ext):
    """build_ext that records which sources it compiled (``exchange/compiled.json``, their
    hashes), once every module built: an import compares them with the sources it finds and
    runs the core from source when they differ (exchange/__init__.py)."""

    def run(self) -> None:
        self.failed = False
        super().run()
        if not self.extensions:
            return
        manifest = Path(self.get_ext_fullpath("exchange.matching")).parent / "compiled.json"
        if self.failed:
            manifest.unlink(missing_ok=True)
            print("perpsim: the core did not compile; it stays pure Python", file=sys.stderr)
            return
        manifest.write_text(json.dumps(SOURCE_HASHES, indent=1))

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            self.failed = True
            raise  # an optional extension: setuptools turns this into a warning


def source_hash(path: str) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


setup(ext_modules=compiled_core(), cmdclass={"build_ext": BuildCore})
