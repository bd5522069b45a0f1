"""The layout stays layered (README, "Where this lives"): tasks.py → db/commands → the
engine → the modules under it, with no import running back up. A static test over every
module of db/, function-level imports included, so a shortcut taken in a hurry (a runner
that imports a command to print, a renderer that imports the fan-out) fails here, not a
year later in a circular import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB = ROOT / "db"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every db module and the db modules it imports, anywhere in its body. `from
    db.pkg import name` counts as importing db.pkg.name when that is a module."""
    modules = {
        _module_name(path): path
        for path in DB.rglob("*.py")
        if "versions" not in path.relative_to(DB).parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names}
                inside = submodules & modules.keys()
                found.update(inside or {node.module})
        graph[name] = {m for m in found if m in modules or m in {"tasks", "noxfile"}} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            found = None
            if imported in graph and not state.get(imported):
                found = visit(imported, [*path, imported])
            if found is not None:
                return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if not state.get(module) and (found := visit(module, [module])) is not None:
            return found
    return None


def test_db_never_imports_the_command_line_or_the_noxfile() -> None:
    offenders = {m: sorted(i & {"tasks", "noxfile"}) for m, i in _imports().items()}
    assert not {m: i for m, i in offenders.items() if i}, (
        "db/ is used by tasks.py and noxfile.py, never the other way round: move what is "
        f"shared into db/. Offenders: {offenders}"
    )


def test_only_commands_import_commands() -> None:
    graph = _imports()
    upward = {
        module: sorted(i for i in imported if i.startswith("db.commands"))
        for module, imported in graph.items()
        if not module.startswith("db.commands")
    }
    upward = {m: i for m, i in upward.items() if i}
    assert not upward, (
        "db/commands is the top layer (tasks.py calls it); a module under it that imports "
        "a command runs an arrow back up. Pass what it needs as an argument, or move the "
        f"shared piece down. Offenders: {upward}"
    )


def test_the_modules_of_db_import_each_other_without_a_cycle() -> None:
    cycle = _cycle(_imports())
    assert cycle is None, (
        "an import cycle (function-level imports count: they only hide it): "
        + " → ".join(cycle or [])
        + ". Likely cause: a lower module reaching up for a helper; move it down."
    )
