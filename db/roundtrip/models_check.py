"""Models vs head: autogenerate (with enum labels) must find nothing between the models
and the database at head, and every module under db/models/ must be imported."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from sqlalchemy.engine import Connection

from db import settings
from db.roundtrip.results import FAIL, OK, Result


def unimported_model_modules(package_name: str = "db.models") -> list[str]:
    """Modules of the models package that importing it does not import: their tables are
    in no metadata, so no check would see them."""
    import importlib
    import pkgutil
    import sys

    package = importlib.import_module(package_name)
    folder = package_name.replace(".", "/")
    return sorted(
        f"{folder}/{info.name}.py"
        for info in pkgutil.iter_modules(package.__path__)
        if f"{package_name}.{info.name}" not in sys.modules
    )


def _difference(entry: object) -> str:
    """One autogenerate difference as a readable line (db/roundtrip/model_diff.py)."""
    from db.roundtrip import model_diff

    return model_diff.describe(entry)


def models_match(connection: Connection) -> Result:
    """Autogenerate (with enum labels) finds no difference between the models and the
    database at head, and every model module is imported."""
    # Enum labels: Alembic's autogenerate does not compare them; this maintained plugin does.
    import alembic_postgresql_enum  # noqa: F401
    from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
    from alembic.migration import MigrationContext

    started = time.perf_counter()
    try:
        from db.models import metadata  # the roundtrip checks them; migrations never do
    except Exception as error:  # a model module that does not even import
        where = next(
            (
                f"{Path(f.filename).name}:{f.lineno}"
                for f in reversed(traceback.extract_tb(error.__traceback__))
                if "/db/models/" in f.filename
            ),
            "db/models",
        )
        return Result(
            "head",
            "models vs head",
            FAIL,
            detail=f"the models do not import: {where}: {type(error).__name__}: {error}",
            note="the models do not import",
        )
    problems = []
    if orphans := unimported_model_modules():
        problems.append(
            f"model module(s) that db/models/__init__.py does not import: {', '.join(orphans)}. "
            "Their tables are in no metadata, so no migration is checked against them. "
            "Import them in db/models/__init__.py."
        )
    options = {
        "compare_type": True,
        "compare_server_default": True,
        "include_schemas": True,  # as env.py: models in any application schema
        "include_name": settings.in_app_schemas,
    }
    context = MigrationContext.configure(connection, opts=options)
    diff = compare_metadata(context, metadata)
    if diff:
        from db.roundtrip import model_diff

        needed = ""
        # One autogenerate pass: one UpgradeOps (the list form is the typed one).
        for upgrade_ops in produce_migrations(context, metadata).upgrade_ops_list:
            upgrade_ops.ops, enum_fixes = model_diff.describe_enum_fixes(upgrade_ops.ops)
            needed += (render_python_code(upgrade_ops) + "\n") if upgrade_ops.ops else ""
            needed += "".join(f"  {fix}\n" for fix in enum_fixes)
        problems.append(
            "the models and the migrated database disagree: a model changed without a "
            "migration, or a migration without its model.\n"
            + "\n".join(f"  {_difference(d)}" for d in diff)
            + "\nFix: write the migration (`invoke migrate.new --autogenerate MESSAGE`, then "
            "review it), or change the models to match the migrations. What a migration "
            "would need if the models are right (if the migration is, the models need the "
            "opposite):\n" + needed.rstrip("\n")
        )
    connection.rollback()
    return Result(
        "head",
        "models vs head",
        FAIL if problems else OK,
        time.perf_counter() - started,
        "\n".join(problems),
    )
