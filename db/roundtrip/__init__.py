"""The roundtrip: proof that every migration is reversible, before it reaches a shared
database. It compares the real catalog (pg_dump), not autogenerate's view of it.

- `static`: checks that need no database (one head, file names, real downgrades,
  no model imports).
- `snapshot`: a deterministic, normalised pg_dump of the app schemas.
- `sample_data`: representative rows for every table, derived from the live catalog.
- `stairway`: up, down, up per revision, with rows; `chain`: base → head → base → head;
  `models_check`: models vs head; `check`: all of it in order, into `results`.
"""
