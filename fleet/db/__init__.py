"""The database layer: ORM models (:mod:`.models`), the async engine and sessions
(:mod:`.session`) and Alembic from Python (:mod:`.migrate`). See ``docs/store.md``."""
