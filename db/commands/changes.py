"""The commands that change the schema, or preview a change: up, down, plan, new."""

from __future__ import annotations

import ast
import json
import textwrap
import time
from typing import TYPE_CHECKING

from db import (
    revisions,
    runner,
    settings,
)
from db.commands.target import (
    apply_plan,
    changing_target,
    guard_data,
    open_target,
    report_step,
)
from db.errors import ConfigError, MigrationFailed, Refused, RevisionError
from db.output import say

if TYPE_CHECKING:
    from db import preview


def _plan(
    current: str | None,
    direction: str,
    label: str,
    *,
    to: str | None = None,
    steps: int | None = None,
) -> list[runner.Step]:
    """The steps of an up or down from `current`, refused early when they make no sense."""
    if to is not None and not to.strip():
        raise ConfigError(
            "--to needs a revision: a number such as 002, 'head' or 'base'.",
            "`invoke migrate.status` lists the revisions",
        )
    script = revisions.script_directory()
    if direction == "up":
        return runner.plan_upgrade(script, current, to or "head")
    if steps is not None and to is not None:
        raise ConfigError("give --steps or --to, not both.")
    if current is None:
        raise RevisionError(
            f"nothing to roll back: {label} is at base.",
            "`invoke migrate.status` shows what is applied",
        )
    plan = runner.plan_downgrade(script, current, steps=steps, target=to)
    for step in plan:
        if reason := getattr(step.script.module, "irreversible", None):
            raise Refused(
                f"cannot roll back {step.revision} ({step.description}): it is declared "
                f"irreversible ({reason}).",
                "roll forward instead: write a new migration that undoes what you need "
                f"(invoke migrate.new), or restore a backup taken before {step.revision}",
            )
    return plan


def _refuse_half_applicable(plan: list[runner.Step]) -> None:
    """The roundtrip's static check on the files about to run (an AST read, no import):
    a step whose failure would leave the database between two revisions is not started."""
    from db.roundtrip import static

    problems = [problem for step in plan for problem in static.mixed_autocommit(step.path)]
    if problems:
        raise ConfigError(
            f"not applied: {'; '.join(problems)}. Nothing was run.", static.MIXED_HINT
        )


def _dry_run(
    direction: str, *, to: str | None, steps: int | None = None, from_rev: str | None
) -> None:
    """Print the SQL the command would run; connect only to read the current revision."""
    if from_rev is not None:
        current = revisions.resolve(revisions.script_directory(), from_rev)
        where = f"a database at {from_rev} (--from)"
    else:
        with open_target() as target:
            current = runner.current_revision(target.connection)
            where = target.label
    plan = _plan(current, direction, where, to=to, steps=steps)
    end = plan[-1].to_revision or "base" if plan else current or "base"
    sql = ""
    if plan:
        from db import preview

        # Rendered before anything is printed: a migration that cannot be rendered
        # offline (it reads the database) leaves no half of a script on stdout.
        sql = preview.offline_sql(current, plan)
    # Plain print: SQL must reach stdout exactly, never through Rich's markup.
    print(f"-- Dry run of migrate.{direction} on {where}: {current or 'base'} -> {end}.")
    print("-- Nothing below was executed, and no lock was taken.")
    if not plan:
        print("-- Nothing to do.")
        return
    print(sql, end="")


def _dry_run_asked(dry_run: bool, from_rev: str | None) -> bool:
    if from_rev is not None and not dry_run:
        raise ConfigError("--from only goes with --dry-run.")
    return dry_run


def migrate_up(
    to: str = "head",
    lock_timeout: str | None = None,
    allow_changed: bool = False,
    dry_run: bool = False,
    from_rev: str | None = None,
) -> None:
    if _dry_run_asked(dry_run, from_rev):
        _dry_run("up", to=to, from_rev=from_rev)
        return
    with changing_target(lock_timeout, allow_changed=allow_changed) as target:
        current = runner.current_revision(target.connection)
        plan = _plan(current, "up", target.label, to=to)
        if not plan:
            say(f"Nothing to apply: {target.label} is at {current or 'base'}.")
            return
        _refuse_half_applicable(plan)
        apply_plan(target, plan, "Upgrading")


def migrate_down(
    steps: int | None = None,
    to: str | None = None,
    lock_timeout: str | None = None,
    allow_changed: bool = False,
    dry_run: bool = False,
    from_rev: str | None = None,
    allow_data_loss: bool = False,
    backup: str | None = None,
) -> None:
    if _dry_run_asked(dry_run, from_rev):
        _dry_run("down", to=to, steps=steps, from_rev=from_rev)
        return
    with changing_target(lock_timeout, allow_changed=allow_changed) as target:
        current = runner.current_revision(target.connection)
        plan = _plan(current, "down", target.label, to=to, steps=steps)
        if not plan:
            say(f"Nothing to roll back: {target.label} is already at {current}.")
            return
        from db import preview

        rehearsed = preview.rehearse(target.connection, plan)
        stopped = rehearsed.rehearsal.stopped_before
        if stopped is not None and not allow_data_loss:
            # The real run would fail the same way: say so now, having changed nothing.
            hint = (
                "fix the migration (or the data it trips on); if it fails only inside a "
                "rehearsal's single transaction, --allow-data-loss skips this check"
            )
            if isinstance(rehearsed.rehearsal.error, NotImplementedError):
                hint = (
                    f"write {stopped.revision}'s downgrade(), or, if it cannot be undone, "
                    'declare irreversible = "why" at module level'
                )
            raise MigrationFailed(
                f"the rollback fails in its rehearsal, at {stopped.revision} "
                f"({stopped.description}): {rehearsed.rehearsal.reason}. Nothing was changed.",
                hint,
            )
        guard_data(
            target,
            rehearsed.loss,
            unknown=f"its rehearsal failed: {rehearsed.rehearsal.reason}" if stopped else "",
            allow_data_loss=allow_data_loss,
            backup=backup,
        )
        apply_plan(target, plan, "Downgrading")


def migrate_plan(
    down: bool = False,
    steps: int | None = None,
    to: str | None = None,
    lock_timeout: str | None = None,
    as_json: bool = False,
) -> None:
    """Rehearse the pending migrations (or a rollback) in one transaction, then roll back."""
    if not down and steps is not None:
        raise ConfigError("--steps goes with --down.")
    direction = "down" if down else "up"
    # Quiet while rehearsing when the output is JSON: stdout must hold the JSON alone.
    tell = (lambda _text: None) if as_json else say
    with changing_target(lock_timeout, bookkeeping=False) as target:
        current = runner.current_revision(target.connection)
        plan = _plan(current, direction, target.label, to=to, steps=steps)
        start = plan[0].from_revision or "base" if plan else current or "base"
        end = plan[-1].to_revision or "base" if plan else current or "base"
        if not plan:
            tell(f"Nothing to plan: {target.label} is at {current or 'base'}.")
            rehearsed = None
        else:
            tell(
                f"Plan for {target.label}: {start} → {end}, rehearsed in one transaction that "
                "is rolled back."
            )
            from db import preview

            started = time.perf_counter()
            rehearsed = preview.rehearse(target.connection, plan, measure=True)
            seconds = time.perf_counter() - started
    if as_json:
        _plan_json(target.label, direction, start, end, rehearsed)
    elif rehearsed is not None:
        _plan_text(rehearsed, down, seconds)
    if rehearsed is not None and rehearsed.rehearsal.stopped_before is not None:
        failed = rehearsed.rehearsal.stopped_before
        raise MigrationFailed(
            f"the rehearsal failed at {failed.revision} ({failed.description}): "
            f"{rehearsed.rehearsal.reason}.",
            "nothing was changed; the real run would fail the same way. Fix the migration "
            "(or the data it trips on) and plan again",
        )


def _plan_text(rehearsed: preview.Rehearsed, down: bool, seconds: float) -> None:
    for step, step_seconds in rehearsed.rehearsal.steps:
        report_step(step, step_seconds)
    if rehearsed.rehearsal.stopped_before is not None:
        say(
            f"[yellow]Stopped at {rehearsed.rehearsal.stopped_before.revision}:[/yellow] "
            f"{rehearsed.rehearsal.reason}. The changes below are those of the steps above."
        )
    diff = rehearsed.schema_diff()
    say(f"Schema changes ({len(diff)}):" if diff else "Schema changes: none.")
    for line in diff:
        say(f"  {line}", markup=False)
    if rehearsed.loss:
        verb = "rollback" if down else "change"
        say(f"[yellow]Data this {verb} would destroy:[/yellow] " + "; ".join(rehearsed.loss.lines))
    _impact_text(rehearsed)
    say(f"Rolled back after {seconds:.2f} s: nothing was changed.")


def _impact_text(rehearsed: preview.Rehearsed) -> None:
    """Per migration, what each statement locks and for how long (db/impact.py)."""
    from db import impact, output

    measured = [step for step in rehearsed.impact if step.statements]
    if not measured:
        say("Locks on existing tables: none.")
        return
    say("Locks on existing tables, measured in the rehearsal:")
    for number, step in enumerate(rehearsed.impact):
        if not step.statements:
            earlier = " beyond those the migrations before it hold" if number else ""
            say(f"{step.revision} {output.escaped(step.description)}: no new lock{earlier}.")
            continue
        output.table(
            impact.COLUMNS,
            [[output.escaped(cell) for cell in row] for row in impact.rows(step)],
            title=f"{step.revision} {output.escaped(step.description)} ({step.seconds:.2f} s)",
        )
    for note in impact.notes(settings.timeouts().lock_ms, rehearsed.impact):
        # Wrapped here: CI's summary shows it in a code block, which does not wrap.
        say(textwrap.fill(note, 88, initial_indent="  ", subsequent_indent="  "), markup=False)


def _plan_json(
    label: str, direction: str, start: str, end: str, rehearsed: preview.Rehearsed | None
) -> None:
    rehearsal = rehearsed.rehearsal if rehearsed is not None else None
    stopped = rehearsal.stopped_before if rehearsal is not None else None
    document = {
        "database": label,
        "direction": direction,
        "from": start,
        "to": end,
        "steps": [
            {"revision": s.revision, "description": s.description, "seconds": round(t, 4)}
            for s, t in (rehearsal.steps if rehearsal is not None else [])
        ],
        "failed_at": stopped.revision if stopped is not None else None,
        "error": rehearsal.reason if stopped is not None else None,
        "schema_changes": rehearsed.schema_diff() if rehearsed is not None else [],
        "data_loss": rehearsed.loss.lines if rehearsed is not None else [],
        "impact": [s.as_dict() for s in rehearsed.impact] if rehearsed is not None else [],
        "ok": stopped is None,
    }
    print(json.dumps(document, indent=2))


class _NothingToGenerate(Exception):
    pass


def _refuse_empty(context, revision, directives) -> None:
    if directives[0].upgrade_ops.is_empty():
        raise _NothingToGenerate()


def migrate_new(message: str, autogenerate: bool = False) -> None:
    message = " ".join(message.split())
    if message.startswith("-"):  # `invoke migrate.new --help` hands "--help" over as one
        raise ConfigError(
            f"{message!r} looks like an option, not a description; nothing was created.",
            "the options: invoke --help migrate.new; a migration: "
            'invoke migrate.new "add task reminders"',
        )
    slug = revisions.slug_words(message)
    if not slug:
        raise ConfigError(
            f"the description {message!r} has no letters or digits that can go in a file "
            "name (ASCII).",
            'describe it with some plain letters, e.g. invoke migrate.new "add task reminders"',
        )
    config = revisions.alembic_config()
    # env.py's hook is for the Alembic CLI; here the id and name are decided below.
    config.set_main_option("revision_environment", "false")
    rev_id = revisions.next_revision_id(revisions.script_directory(config))
    if autogenerate:
        _refuse_unimported_models()
        script = _autogenerated(config, slug, rev_id)
    else:
        from alembic import command

        script = command.revision(config, message=slug, rev_id=rev_id)
    assert script is not None and not isinstance(script, list)
    path = revisions.path_of(script)
    source = path.read_text()
    # Alembic names the file after the message; the docstring gets the message as given.
    described = source.replace(f'"""{slug}\n', f'"""{revisions.docstring(message)}\n', 1)
    try:
        ast.parse(described)
    except SyntaxError:
        described = source  # never leave a file that does not parse
    path.write_text(described)
    root = settings.PROJECT_ROOT
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    say(f"Created {shown} (revision {rev_id}).")
    if autogenerate:
        _format(path)
        say(
            "Review it before anything else: autogenerate misses renames (it drops and adds), "
            "data moves, CHECK constraints, triggers and functions. Then `invoke "
            "migrate.roundtrip`."
        )
    else:
        say("Write upgrade() and downgrade(), then apply it with `invoke migrate.up`.")


def _models_in(path) -> list[str]:
    """The classes of a model module that declare a table."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return []
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(item, ast.Assign | ast.AnnAssign)
            and "__tablename__"
            in ast.unparse(item.targets[0] if isinstance(item, ast.Assign) else item.target)
            for item in node.body
        )
    ]


def _refuse_unimported_models() -> None:
    """Autogenerate sees only the tables of imported modules: a model module that
    db/models/__init__.py does not import would silently be left out of the file."""
    from db.roundtrip.cycle import unimported_model_modules

    orphans = unimported_model_modules()
    if not orphans:
        return
    imports = []
    for orphan in orphans:
        module = orphan.removesuffix(".py").replace("/", ".")
        classes = _models_in(settings.PROJECT_ROOT / orphan)
        imports.append(
            f"from {module} import {', '.join(classes)}"
            if classes
            else f"import {module}  # noqa: F401"
        )
    raise ConfigError(
        f"{', '.join(orphans)} is not imported by db/models/__init__.py: autogenerate cannot "
        "see its tables, so they would be missing from the migration; nothing was written.",
        f"add to db/models/__init__.py: {'; '.join(imports)} (and to __all__), then run again",
    )


def _autogenerated(config, slug: str, rev_id: str):
    """Autogenerate against a throwaway database at head: the developer's own database may
    hold experiments that no migration made."""
    from db import schema_docs  # a throwaway server: imported only when asked for

    with schema_docs.database_at_head() as (_server, _database, connection):
        config.attributes["connection"] = connection
        try:
            from alembic import command

            return command.revision(
                config,
                message=slug,
                rev_id=rev_id,
                autogenerate=True,
                process_revision_directives=_refuse_empty,
            )
        except _NothingToGenerate:
            raise ConfigError(
                "autogenerate found no difference between the models and the migrations at "
                "head: no file was written.",
                "change a model in db/models/ first, or write the migration by hand with "
                "`invoke migrate.new MESSAGE`",
            ) from None


def _format(path) -> None:
    """ruff, when installed, so that the generated file passes `nox -s lint` as it is."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff")
    argv = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    for arguments in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
        subprocess.run([*argv, *arguments, str(path)], capture_output=True, check=False)
