"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 22:55:10.952283
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('schema_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.String(length=32), nullable=False),
    sa.Column('cortexloop_version', sa.String(length=32), nullable=False),
    sa.Column('upgraded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schema_history'))
    )
    op.create_table('subjects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subjects')),
    sa.UniqueConstraint('label', name=op.f('uq_subjects_label'))
    )
    op.create_table('sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.Enum('scanner', 'simulation', 'replay', name='sessionkind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('status', sa.Enum('running', 'completed', 'aborted', name='status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cortexloop_version', sa.String(length=32), nullable=False),
    sa.Column('config_toml', sa.Text(), nullable=True),
    sa.Column('config_sha256', sa.String(length=64), nullable=True),
    sa.Column('atlas_path', sa.Text(), nullable=True),
    sa.Column('atlas_sha256', sa.String(length=64), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_sessions_subject_id_subjects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions')),
    sa.UniqueConstraint('subject_id', 'label', name=op.f('uq_sessions_subject_id_label'))
    )
    op.create_table('encoding_models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('backbone', sa.String(length=64), nullable=False),
    sa.Column('layers', sa.JSON(), nullable=True),
    sa.Column('artifact_path', sa.Text(), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('n_training_stimuli', sa.Integer(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['parent_id'], ['encoding_models.id'], name=op.f('fk_encoding_models_parent_id_encoding_models')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_encoding_models_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_encoding_models'))
    )
    with op.batch_alter_table('encoding_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_encoding_models_session_id'), ['session_id'], unique=False)

    op.create_table('rois',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('label_value', sa.Integer(), nullable=True),
    sa.Column('n_voxels', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_rois_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rois')),
    sa.UniqueConstraint('session_id', 'name', name=op.f('uq_rois_session_id_name'))
    )
    op.create_table('rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('running', 'completed', 'aborted', name='status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('refit_model_version_id', sa.Integer(), nullable=True),
    sa.Column('policy', sa.String(length=64), nullable=True),
    sa.Column('targets', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['model_version_id'], ['encoding_models.id'], name=op.f('fk_rounds_model_version_id_encoding_models')),
    sa.ForeignKeyConstraint(['refit_model_version_id'], ['encoding_models.id'], name=op.f('fk_rounds_refit_model_version_id_encoding_models')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_rounds_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rounds')),
    sa.UniqueConstraint('session_id', 'index', name=op.f('uq_rounds_session_id_index'))
    )
    op.create_table('stimuli',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('kind', sa.Enum('natural', 'synthesized', 'control', name='stimuluskind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('target_roi', sa.String(length=64), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('synthesis_params', sa.JSON(), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['encoding_models.id'], name=op.f('fk_stimuli_model_version_id_encoding_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stimuli')),
    sa.UniqueConstraint('sha256', name=op.f('uq_stimuli_sha256'))
    )
    op.create_table('predictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('stimulus_id', sa.Integer(), nullable=False),
    sa.Column('roi_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['encoding_models.id'], name=op.f('fk_predictions_model_version_id_encoding_models')),
    sa.ForeignKeyConstraint(['roi_id'], ['rois.id'], name=op.f('fk_predictions_roi_id_rois')),
    sa.ForeignKeyConstraint(['stimulus_id'], ['stimuli.id'], name=op.f('fk_predictions_stimulus_id_stimuli')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_predictions')),
    sa.UniqueConstraint('model_version_id', 'stimulus_id', 'roi_id', name=op.f('uq_predictions_model_version_id_stimulus_id_roi_id'))
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_predictions_stimulus_id'), ['stimulus_id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('training', 'closed_loop', 'localizer', name='runkind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('status', sa.Enum('running', 'completed', 'aborted', name='status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('tr_s', sa.Float(), nullable=False),
    sa.Column('n_volumes_planned', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('first_trigger_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_runs_round_id_rounds')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_runs_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('session_id', 'index', name=op.f('uq_runs_session_id_index'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_round_id'), ['round_id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('level', sa.Enum('debug', 'info', 'warning', 'error', 'critical', name='eventlevel', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('volume_index', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_events_run_id_runs')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_events_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_session_id_at'), ['session_id', 'at'], unique=False)

    op.create_table('presentations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('stimulus_id', sa.Integer(), nullable=False),
    sa.Column('trial_index', sa.Integer(), nullable=False),
    sa.Column('condition', sa.String(length=64), nullable=True),
    sa.Column('target_roi', sa.String(length=64), nullable=True),
    sa.Column('planned_onset_s', sa.Float(), nullable=False),
    sa.Column('planned_duration_s', sa.Float(), nullable=False),
    sa.Column('actual_onset_s', sa.Float(), nullable=True),
    sa.Column('actual_duration_s', sa.Float(), nullable=True),
    sa.Column('dropped_frames', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_presentations_run_id_runs')),
    sa.ForeignKeyConstraint(['stimulus_id'], ['stimuli.id'], name=op.f('fk_presentations_stimulus_id_stimuli')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_presentations')),
    sa.UniqueConstraint('run_id', 'trial_index', name=op.f('uq_presentations_run_id_trial_index'))
    )
    with op.batch_alter_table('presentations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_presentations_stimulus_id'), ['stimulus_id'], unique=False)

    op.create_table('scores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('roi_id', sa.Integer(), nullable=True),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['encoding_models.id'], name=op.f('fk_scores_model_version_id_encoding_models')),
    sa.ForeignKeyConstraint(['roi_id'], ['rois.id'], name=op.f('fk_scores_roi_id_rois')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_scores_round_id_rounds')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_scores_run_id_runs')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_scores_session_id_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scores'))
    )
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scores_session_id'), ['session_id'], unique=False)

    op.create_table('volumes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('ok', 'late', 'missing', name='volumestatus', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('arrived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('file_path', sa.Text(), nullable=True),
    sa.Column('file_sha256', sa.String(length=64), nullable=True),
    sa.Column('framewise_displacement_mm', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_volumes_run_id_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volumes')),
    sa.UniqueConstraint('run_id', 'index', name=op.f('uq_volumes_run_id_index'))
    )
    op.create_table('measured_responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('presentation_id', sa.Integer(), nullable=False),
    sa.Column('roi_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.Enum('provisional', 'lsa', 'lss', name='responsemethod', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('stderr', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['presentation_id'], ['presentations.id'], name=op.f('fk_measured_responses_presentation_id_presentations')),
    sa.ForeignKeyConstraint(['roi_id'], ['rois.id'], name=op.f('fk_measured_responses_roi_id_rois')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_measured_responses')),
    sa.UniqueConstraint('presentation_id', 'roi_id', 'method', name=op.f('uq_measured_responses_presentation_id_roi_id_method'))
    )
    op.create_table('roi_signals',
    sa.Column('volume_id', sa.Integer(), nullable=False),
    sa.Column('roi_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['roi_id'], ['rois.id'], name=op.f('fk_roi_signals_roi_id_rois')),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], name=op.f('fk_roi_signals_volume_id_volumes')),
    sa.PrimaryKeyConstraint('volume_id', 'roi_id', name=op.f('pk_roi_signals'))
    )


def downgrade() -> None:
    op.drop_table('roi_signals')
    op.drop_table('measured_responses')
    op.drop_table('volumes')
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scores_session_id'))

    op.drop_table('scores')
    with op.batch_alter_table('presentations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_presentations_stimulus_id'))

    op.drop_table('presentations')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_session_id_at'))

    op.drop_table('events')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_round_id'))

    op.drop_table('runs')
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_predictions_stimulus_id'))

    op.drop_table('predictions')
    op.drop_table('stimuli')
    op.drop_table('rounds')
    op.drop_table('rois')
    with op.batch_alter_table('encoding_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_encoding_models_session_id'))

    op.drop_table('encoding_models')
    op.drop_table('sessions')
    op.drop_table('subjects')
    op.drop_table('schema_history')
