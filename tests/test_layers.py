"""The packages' import direction: no module imports a layer above its own.

Read from the code itself (every `import`, at module level or inside a function), so a new
import that turns the layers around fails here rather than in review.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

DANTE = Path(__file__).resolve().parents[1] / "dante"

#: What each top-level part of `dante` may import, besides itself. Lowest first.
ALLOWED: Final[dict[str, frozenset[str]]] = {
    # wire contracts and the collector settings: nothing of ours
    "schemas": frozenset(),
    "collector": frozenset(),
    # file locks: nothing of ours
    "locks": frozenset(),
    # the log
    "events": frozenset({"schemas", "locks"}),
    # the chain boundary (dGPU on Solana): wire contracts only
    "chain": frozenset({"schemas", "locks"}),
    # talking to the platform, for the CLI and the agent: nothing of the server
    "client": frozenset({"schemas", "events", "chain"}),
    # the rules, pure
    "domain": frozenset({"schemas", "events"}),
    # read models folded from the log
    "projections": frozenset({"schemas", "events", "collector"}),
    # process managers deciding on events, and the runner that carries their decisions out
    "handlers": frozenset({"schemas", "events", "domain", "chain"}),
    # what the platform serves (the command service carries decisions out as handlers do)
    "services": frozenset(
        {"schemas", "events", "domain", "projections", "client", "handlers", "chain"}
    ),
    # the composition root
    "platform": frozenset(
        {"schemas", "events", "domain", "projections", "client", "handlers", "services", "chain"}
    ),
    # the provider's machine: a client of the platform
    "agent": frozenset({"schemas", "events", "domain", "client"}),
    # the command line puts it all together
    "cli": frozenset(
        {
            "schemas",
            "collector",
            "events",
            "client",
            "domain",
            "projections",
            "handlers",
            "services",
            "platform",
            "agent",
            "chain",
        }
    ),
    "__main__": frozenset({"cli"}),
}
#: Modules of `events` the domain may use: values and names, no NATS.
PURE_EVENTS: Final = frozenset({"records", "codec", "subjects", "upcasting", "describe"})
#: Libraries that do IO, which the domain never imports.
IO_LIBRARIES: Final = ("nats", "aiosqlite", "sqlite3", "docker", "anyio", "asyncio", "socket")


def _part(module: str) -> str:
    """`dante.events.store` -> `events` (`dante` itself: '')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "dante":
                yield node.module
                continue
            # `from dante import __version__` is the package's version, which anyone may read
            yield from (f"dante.{a.name}" for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(DANTE.rglob("*.py")):
        relative = path.relative_to(DANTE.parent).with_suffix("")
        found.append((".".join(relative.parts).removesuffix(".__init__"), path))
    return found


MODULES = _modules()


def test_every_part_has_a_rule() -> None:
    parts = {_part(module) for module, _ in MODULES if module != "dante"}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


def _upwards(module: str, path: Path) -> list[str]:
    """What `module` (at `path`) imports from parts it may not use."""
    own = _part(module)
    return sorted(
        imported
        for imported in _imports(path)
        if imported.startswith("dante.")
        and _part(imported) != own
        and _part(imported) not in ALLOWED[own]
    )


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_no_module_imports_a_layer_above_it(module: str, path: Path) -> None:
    if module == "dante":
        return
    wrong = _upwards(module, path)
    assert not wrong, f"{module} ({_part(module)}) may not import {wrong}"


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in MODULES if _part(m) == "domain"],
    ids=[m for m, _ in MODULES if _part(m) == "domain"],
)
def test_the_domain_does_no_io(module: str, path: Path) -> None:
    imported = list(_imports(path))
    io = [name for name in imported if name.split(".")[0] in IO_LIBRARIES]
    impure = [
        name
        for name in imported
        if name.startswith("dante.events.") and name.split(".")[2] not in PURE_EVENTS
    ]
    assert not io and not impure, f"{module} imports {io + impure}"


def test_the_pure_parts_of_the_log_import_no_nats() -> None:
    for name in PURE_EVENTS:
        imported = list(_imports(DANTE / "events" / f"{name}.py"))
        assert not [m for m in imported if m.split(".")[0] == "nats"], name
        assert not [
            m
            for m in imported
            if m.startswith("dante.events.") and m.split(".")[2] not in PURE_EVENTS
        ], name


def test_an_import_upwards_is_found_wherever_it_is(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from dante.client.connect import connect\n"
        "def later():\n"
        "    from dante.services.commands import CommandService\n"
        "    import dante.cli.app\n"
    )
    assert _upwards("dante.agent.bad", bad) == ["dante.cli.app", "dante.services.commands"]
    assert _upwards("dante.cli.bad", bad) == []


def _type_only(tree: ast.Module) -> set[ast.AST]:
    """The imports under `if TYPE_CHECKING:`: for the type checker, never run."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If)
        and isinstance(block.test, ast.Name)
        and block.test.id == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }


def _graph() -> dict[str, set[str]]:
    """Which of our modules each module imports when it runs (a submodule named in
    `from pkg import x` counts as `pkg.x`)."""
    known = {module for module, _ in MODULES}
    graph: dict[str, set[str]] = {}
    for module, path in MODULES:
        found = set()
        tree = ast.parse(path.read_text())
        skipped = _type_only(tree)
        for node in ast.walk(tree):
            if node in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in known else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {m for m in found if m in known and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    # Counting the imports inside functions too: a lazy import hides a cycle, it does not
    # remove it (`cli.jobs` and `cli.job_output` were one). Imports for the type checker
    # alone run never and do not count.
    assert _cycles(_graph()) == []


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
