"""Schema revisions: new databases, models vs migrations, older and newer schemas."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db import (
    NotADatabaseError,
    SchemaTooNewError,
    SchemaTooOldError,
    check_schema,
    head_revision,
    make_engine,
    open_database,
    upgrade,
)
from db.database import upgrade_database
from db.models import Base
from db.schema import MIGRATIONS_DIR, cortexloop_version

NEXT_REVISION = '''
"""a later revision, as a future cortexloop would ship"""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("future_table", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("future_table")
'''


@pytest.fixture
def later_migrations(tmp_path: Path) -> Path:
    """This cortexloop's migrations plus one revision on top of them."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "9999_future.py").write_text(NEXT_REVISION.format(head=head_revision()))
    return folder


def test_new_database_is_at_head_and_records_who_made_it(db_path: Path) -> None:
    with open_database(db_path, create=True) as database:
        state = check_schema(database.engine, database.name)
    assert state.revision == head_revision()
    assert state.written_by == cortexloop_version()


def test_migrations_build_exactly_the_models(db_path: Path) -> None:
    engine = make_engine(db_path)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == [], "models and migrations differ: write a migration for the change"


def test_upgrade_runs_the_migrations_of_a_later_revision(db_path: Path, later_migrations: Path) -> None:
    engine = make_engine(db_path)
    upgrade(engine)
    assert upgrade(engine, migrations_dir=later_migrations) == "9999"
    with engine.connect() as connection:
        tables = connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'").scalars()
        assert "future_table" in set(tables)
    engine.dispose()


def test_older_schema_says_to_upgrade(db_path: Path, later_migrations: Path) -> None:
    engine = make_engine(db_path)
    upgrade(engine)  # this cortexloop's head is older than later_migrations' head
    with pytest.raises(SchemaTooOldError, match=r"cortexloop db upgrade --db .*sessions\.sqlite"):
        check_schema(engine, str(db_path), migrations_dir=later_migrations)
    engine.dispose()


def test_newer_schema_names_the_cortexloop_version_needed(db_path: Path, later_migrations: Path) -> None:
    engine = make_engine(db_path)
    upgrade(engine, migrations_dir=later_migrations)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE schema_history SET cortexloop_version = '7.1.0'")
    engine.dispose()
    with pytest.raises(SchemaTooNewError, match=r"written by cortexloop 7\.1\.0.*install cortexloop 7\.1\.0"):
        open_database(db_path)
    # and `db upgrade` refuses rather than touching it
    with pytest.raises(SchemaTooNewError, match="upgrade cortexloop, not the database"):
        upgrade_database(db_path)
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("9999",)
    con.close()


def test_empty_database_file_is_not_silently_used(db_path: Path) -> None:
    db_path.touch()
    with pytest.raises(SchemaTooOldError, match=r"empty database.*cortexloop db upgrade"):
        open_database(db_path)


def test_foreign_database_is_refused_and_left_alone(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("CREATE TABLE inventory (item TEXT)")
    con.execute("INSERT INTO inventory VALUES ('coil')")
    con.commit()
    con.close()
    with pytest.raises(NotADatabaseError, match="not a cortexloop session database"):
        open_database(db_path, create=True)
    with pytest.raises(NotADatabaseError, match="refusing"):
        upgrade_database(db_path)
    con = sqlite3.connect(db_path)
    tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"inventory"}
    assert con.execute("SELECT item FROM inventory").fetchall() == [("coil",)]
    con.close()


def test_failed_upgrade_leaves_no_half_schema(db_path: Path, later_migrations: Path) -> None:
    broken = later_migrations / "versions" / "9999_future.py"
    broken.write_text(
        broken.read_text().replace(
            'op.create_table("future_table"', 'op.execute("NOT SQL")\n    op.create_table("future_table"'
        )
    )
    engine = make_engine(db_path)
    upgrade(engine)
    with pytest.raises(Exception, match="NOT SQL"):
        upgrade(engine, migrations_dir=later_migrations)
    engine.dispose()
    # still exactly this cortexloop's schema, usable as before
    with open_database(db_path) as database:
        assert check_schema(database.engine, database.name).revision == head_revision()
