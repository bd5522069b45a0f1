"""Checks on the migration files themselves, with no database: run over every file.

- one head and a linear history (no branches, no merges), reported before anything runs;
- file names match `NNN_slug.py` and the revision id inside;
- every migration has an upgrade() and a downgrade() (an empty downgrade is for data-only
  migrations: the stairway checks that the upgrade really changes no catalog);
- no migration imports the models (migrations stay frozen when the models change);
- no upgrade() or downgrade() mixes an autocommit_block() with statements outside it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TypeGuard

from alembic.script import ScriptDirectory

from db import revisions


def _assigned(tree: ast.Module, name: str) -> ast.expr | None:
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.value
    return None


def _does_nothing(function: ast.FunctionDef) -> bool:
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return all(
        isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        for s in body
    )


def _imports_models(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name == "db.models" or a.name.startswith("db.models.") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "db.models" or node.module.startswith("db.models."):
                return True
            if node.module == "db" and any(a.name == "models" for a in node.names):
                return True
    return False


MIXED_HINT = (
    "split it into two migrations: one with only the autocommit block (written to be run "
    "again: IF NOT EXISTS), one with the rest"
)

_EMITS_NOTHING = {"get_context", "get_bind", "f", "inline_literal"}
"""op.* calls that run no SQL."""


def _runs_sql(node: ast.AST) -> TypeGuard[ast.Call]:
    """A call of op.* that runs SQL (op.add_column, op.execute…), or of .execute() on a
    connection."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    if node.func.attr in ("execute", "exec_driver_sql"):
        return True
    owner = node.func.value
    return isinstance(owner, ast.Name) and owner.id == "op" and node.func.attr not in _EMITS_NOTHING


def _autocommit_blocks(function: ast.FunctionDef) -> list[ast.With]:
    return [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.With)
        and any(
            isinstance(item.context_expr, ast.Call)
            and isinstance(item.context_expr.func, ast.Attribute)
            and item.context_expr.func.attr == "autocommit_block"
            for item in node.items
        )
    ]


def _outside(node: ast.AST, blocks: list[ast.With]) -> list[ast.AST]:
    found = []
    for child in ast.iter_child_nodes(node):
        if child not in blocks:
            found += [child, *_outside(child, blocks)]
    return found


def mixed_autocommit(path: Path, tree: ast.Module | None = None) -> list[str]:
    """upgrade() or downgrade() running SQL both in an autocommit_block() and outside it.

    Entering the block commits what ran before it, and each statement in it commits on
    its own, while the version bump comes at the end: when anything after the first
    commit fails, the database is left between two revisions, with part of the step
    applied and a rerun tripping over it. A block alone (CREATE INDEX CONCURRENTLY with
    IF NOT EXISTS) can simply be run again.
    """
    if tree is None:
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError):
            return []
    problems = []
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef) or function.name not in (
            "upgrade",
            "downgrade",
        ):
            continue
        blocks = _autocommit_blocks(function)
        mixed = [n for n in _outside(function, blocks) if _runs_sql(n)] if blocks else []
        if mixed:
            problems.append(
                f"{path.name}: {function.name}() runs SQL outside its autocommit_block() "
                f"(line {mixed[0].lineno}) as well as inside it (line {blocks[0].lineno}): "
                "the block commits on its own, so a failure leaves the database between two "
                "revisions, part applied"
            )
    return problems


def check_file(path: Path) -> list[str]:
    """What is wrong with one migration file."""
    problems = []
    match = revisions.FILENAME.match(path.name)
    if not match:
        problems.append(f"{path.name}: the name must be NNN_slug.py (e.g. 002_add_reminders.py)")
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        return [*problems, f"{path.name}: does not parse: {error}"]
    revision = _assigned(tree, "revision")
    declared = revision.value if isinstance(revision, ast.Constant) else None
    if match and declared != match["rev"]:
        problems.append(
            f"{path.name}: revision id is {declared!r}, but the file name says {match['rev']!r}"
        )
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for required in ("upgrade", "downgrade"):
        if required not in functions:
            problems.append(f"{path.name}: has no {required}()")
    problems += [
        f"{problem}. {MIXED_HINT[0].upper()}{MIXED_HINT[1:]}"
        for problem in mixed_autocommit(path, tree)
    ]
    if _imports_models(tree):
        problems.append(
            f"{path.name}: imports db.models; a migration must not, or it changes when the "
            "models do (write the tables out with op.* instead)"
        )
    return problems


def downgrade_does_nothing(path: Path) -> bool:
    """Whether the file's downgrade() is empty (pass, a docstring, `...`)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError):
        return False
    found = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "downgrade"), None
    )
    return found is not None and _does_nothing(found)


def migration_files(versions: Path | None = None) -> list[Path]:
    folder = versions or revisions.versions_path()
    return sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")


def check_chain(script: ScriptDirectory) -> list[str]:
    """One head, one base, no merges: the chain is a line."""
    problems = []
    heads, bases = script.get_heads(), script.get_bases()
    if len(heads) > 1:
        problems.append(
            f"the chain has {len(heads)} heads ({', '.join(sorted(heads))}): two migrations "
            "revise the same parent. Renumber the newer one so that it revises the other"
        )
    if len(bases) > 1:
        problems.append(f"the chain has {len(bases)} bases: {', '.join(sorted(bases))}")
    for found in script.walk_revisions():
        if isinstance(found.down_revision, tuple | list):
            problems.append(
                f"{found.revision} merges {', '.join(found.down_revision)}: the history must "
                "be linear here. Replace the merge by renumbering one branch on top of the "
                "other"
            )
    return problems


def check_all() -> tuple[list[str], bool]:
    """Every problem, and whether the chain can be run at all (one line of migrations)."""
    problems = [p for f in migration_files() for p in check_file(f)]
    try:
        chain_problems = check_chain(revisions.script_directory())
    except Exception as error:  # a broken chain cannot even be walked
        chain_problems = [f"the chain cannot be read: {error}"]
    return problems + chain_problems, not chain_problems
