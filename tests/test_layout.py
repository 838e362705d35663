"""The layout stays true (docs/architecture.md): imports point down the rooms only, and
no two modules import each other, read from the source (every import, also those inside
functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "exchange", "services")

# Lowest first; a module belongs to the room of its longest matching prefix and may import
# modules of its own room or of lower ranks, never of another room of its own rank: the four
# services know nothing of each other, and each API dialect is a room of its own over the
# gateway's host (services.gateway), which imports no dialect; only the registry names them.
ROOMS = (
    ("schemas", 0),
    ("exchange", 1),
    ("services.runtime", 2),
    ("services.matching", 3), ("services.risk", 3), ("services.liquidation", 3), ("services.oracle", 3),
    ("services.client", 4),
    ("services.gateway", 5),
    ("services.gateway.binance", 6), ("services.gateway.hyperliquid", 6),
    ("services.gateway.registry", 7),
    ("services.sim", 8),
    ("services.launch", 9),
    ("services.cli", 10),
)
# What the pure core may not use: no services, no network, no processes, no event loop.
CORE_FORBIDDEN = ("services", "asyncio", "aiokafka", "aiohttp", "socket", "subprocess")


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(root: Path) -> dict[str, set[str]]:
    """Module -> every module it imports, among ``PACKAGES`` or not."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:  # `from services import risk` imports services.risk
                    candidate = f"{base}.{alias.name}"
                    targets.add(candidate if candidate in known else base)
        targets.discard(name)
        graph[name] = targets
    return graph


def room(module: str) -> tuple[str, int] | None:
    """The room of ``module``: its prefix and rank."""
    best = None
    for prefix, rank in ROOMS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, rank)
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module.startswith("exchange") and target.split(".")[0] in CORE_FORBIDDEN:
                found.append(f"{module} imports {target}: the core does no I/O and knows no service")
            mine, theirs = room(module), room(target)
            if mine is None or theirs is None:
                continue
            if theirs[1] > mine[1]:
                found.append(f"{module} imports {target}, a higher room")
            elif theirs[1] == mine[1] and theirs[0] != mine[0]:
                found.append(f"{module} imports {target}, of another room of its rank ({theirs[0]})")
    ours = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    found.extend(f"import cycle among {', '.join(group)}" for group in cycles(ours))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_imports_point_down_the_rooms_and_form_no_cycle():
    assert violations(imports(ROOT)) == []


def test_every_module_is_in_a_room():
    assert [m for m in modules(ROOT) if m != "services" and room(m) is None] == []


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_finds_an_upward_import_a_cycle_and_io_in_the_core(tmp_path):
    write(tmp_path, {
        "schemas/__init__.py": "",
        "exchange/__init__.py": "",
        "exchange/book.py": "import socket\n",
        "services/__init__.py": "",
        "services/runtime/__init__.py": "",
        "services/runtime/bus.py": "def f():\n    from services.launch import run\n",
        "services/launch.py": "from services.runtime import bus\n",
        "services/sim/__init__.py": "",
        "services/sim/a.py": "from services.sim import b\n",
        "services/sim/b.py": "from . import a\n",
        "services/gateway/__init__.py": "",
        "services/gateway/host.py": "",
        "services/gateway/binance/__init__.py": "from services.gateway import host\n",
        "services/gateway/hyperliquid/__init__.py": "from services.gateway.binance import x\n",
    })
    found = violations(imports(tmp_path))
    assert found == [
        "exchange.book imports socket: the core does no I/O and knows no service",
        "services.gateway.hyperliquid imports services.gateway.binance, of another room of its rank "
        "(services.gateway.binance)",
        "services.runtime.bus imports services.launch, a higher room",
        "import cycle among services.launch, services.runtime.bus",
        "import cycle among services.sim.a, services.sim.b",
    ]
