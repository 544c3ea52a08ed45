"""Alembic's environment: migrates the connection :mod:`pipeline.store.migrate` hands it, or, from
the ``alembic`` command line (writing a revision, ``alembic check``), the state store the settings name."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pipeline.store.migrate import VERSION_TABLE, pipeline_tables_only
from pipeline.store.schema import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=pipeline_tables_only,
        # SQLite cannot alter a column in place: generated revisions copy the table instead.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit(
        "The pipeline's migrations inspect the database they run on: offline (--sql) mode is not supported."
    )
handed = context.config.attributes.get("connection")
if handed is not None:
    run_migrations(handed)
else:
    from pipeline.instance import state_store_url
    from pipeline.store.state import create_state_engine

    engine = create_state_engine(state_store_url())
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()
