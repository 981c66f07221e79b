"""Alembic environment for the session database.

cortexloop runs migrations through ``db.schema.upgrade``, which hands over an
open connection so that the whole upgrade is one transaction. For writing a
new revision by hand, see docs/database.md.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from db.engine import make_engine
from db.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or context.get_x_argument(as_dictionary=True)["db"]
    with make_engine(url).begin() as conn:
        _run(conn)
