"""sweeps: protocol sweeps and their sessions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 01:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('definition', sa.Text(), nullable=False),
    sa.Column('base_toml', sa.Text(), nullable=True),
    sa.Column('cortexloop_version', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweeps')),
    sa.UniqueConstraint('name', name=op.f('uq_sweeps_name'))
    )
    op.create_table('sweep_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('setting', sa.String(length=128), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('overrides', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('running', 'completed', 'aborted', name='status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('worker', sa.String(length=256), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('figures', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_sweep_sessions_session_id_sessions')),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweeps.id'], name=op.f('fk_sweep_sessions_sweep_id_sweeps')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweep_sessions')),
    sa.UniqueConstraint('session_id', name=op.f('uq_sweep_sessions_session_id')),
    sa.UniqueConstraint('sweep_id', 'setting', 'seed', name=op.f('uq_sweep_sessions_sweep_id_setting_seed'))
    )


def downgrade() -> None:
    op.drop_table('sweep_sessions')
    op.drop_table('sweeps')
