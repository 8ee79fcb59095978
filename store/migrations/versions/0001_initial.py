"""Initial schema: sessions, homework events, assignments, nudges, feedback, audit log, login sessions.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("audit_log",
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", sa.String(length=128), nullable=False),
    sa.Column("action", sa.String(length=64), nullable=False),
    sa.Column("session_id", sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log"))
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_index(op.f("ix_audit_log_session_id"), "audit_log", ["session_id"], unique=False)
    op.create_index(op.f("ix_audit_log_user_id"), "audit_log", ["user_id"], unique=False)

    op.create_table("login_sessions",
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("user_id", sa.String(length=128), nullable=False),
    sa.Column("role", sa.String(length=32), nullable=False),
    sa.Column("therapist_id", sa.String(length=128), nullable=True),
    sa.Column("program_id", sa.String(length=128), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_login_sessions"))
    )
    op.create_index(op.f("ix_login_sessions_expires_at"), "login_sessions", ["expires_at"], unique=False)
    op.create_index(op.f("ix_login_sessions_user_id"), "login_sessions", ["user_id"], unique=False)

    op.create_table("sessions",
    sa.Column("session_id", sa.String(length=128), nullable=False),
    sa.Column("therapist_id", sa.String(length=128), nullable=True),
    sa.Column("client_id", sa.String(length=128), nullable=True),
    sa.Column("program_id", sa.String(length=128), nullable=True),
    sa.Column("scheduled_minutes", sa.Integer(), nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at_exact", sa.Boolean(), nullable=False),
    sa.Column("opened", sa.Boolean(), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("summary_id", sa.String(length=64), nullable=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("homework_assigned", sa.Boolean(), nullable=True),
    sa.Column("categories", sa.JSON(), nullable=True),
    sa.Column("note", sa.Text(), nullable=True),
    sa.Column("previous_session_id", sa.String(length=128), nullable=True),
    sa.Column("previous_homework_assigned", sa.Boolean(), nullable=True),
    sa.Column("previous_homework", sa.JSON(), nullable=True),
    sa.Column("previous_homework_reviewed", sa.Boolean(), nullable=True),
    sa.Column("reviews", sa.JSON(), nullable=True),
    sa.Column("n_utterances", sa.Integer(), nullable=True),
    sa.Column("n_microdialogues", sa.Integer(), nullable=True),
    sa.Column("missing_utterances", sa.Integer(), nullable=True),
    sa.Column("duration_s", sa.Float(), nullable=True),
    sa.Column("model_version", sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint("session_id", name=op.f("pk_sessions")),
    sa.UniqueConstraint("summary_id", name=op.f("uq_sessions_summary_id"))
    )
    op.create_index(op.f("ix_sessions_client_id"), "sessions", ["client_id"], unique=False)
    op.create_index(op.f("ix_sessions_ended_at"), "sessions", ["ended_at"], unique=False)
    op.create_index(op.f("ix_sessions_last_seen_at"), "sessions", ["last_seen_at"], unique=False)
    op.create_index("ix_sessions_program_started", "sessions", ["program_id", "started_at"], unique=False)
    op.create_index(op.f("ix_sessions_started_at"), "sessions", ["started_at"], unique=False)
    op.create_index("ix_sessions_therapist_started", "sessions", ["therapist_id", "started_at"], unique=False)

    op.create_table("assignments",
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("session_id", sa.String(length=128), nullable=False),
    sa.Column("turn", sa.Integer(), nullable=False),
    sa.Column("category", sa.String(length=32), nullable=False),
    sa.Column("confidence", sa.Float(), nullable=False),
    sa.Column("start_s", sa.Float(), nullable=True),
    sa.Column("quote", sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(["session_id"], ["sessions.session_id"], name=op.f("fk_assignments_session_id"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_assignments")),
    sa.UniqueConstraint("session_id", "turn", name=op.f("uq_assignments_session_id_turn"))
    )
    op.create_index(op.f("ix_assignments_category"), "assignments", ["category"], unique=False)
    op.create_index(op.f("ix_assignments_session_id"), "assignments", ["session_id"], unique=False)

    op.create_table("homework_events",
    sa.Column("event_id", sa.String(length=64), nullable=False),
    sa.Column("session_id", sa.String(length=128), nullable=False),
    sa.Column("turn", sa.Integer(), nullable=False),
    sa.Column("category", sa.String(length=32), nullable=False),
    sa.Column("confidence", sa.Float(), nullable=False),
    sa.Column("scores", sa.JSON(), nullable=False),
    sa.Column("quote", sa.Text(), nullable=False),
    sa.Column("start_s", sa.Float(), nullable=True),
    sa.Column("trigger_seq", sa.Integer(), nullable=True),
    sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_version", sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(["session_id"], ["sessions.session_id"], name=op.f("fk_homework_events_session_id"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("event_id", name=op.f("pk_homework_events"))
    )
    op.create_index(op.f("ix_homework_events_session_id"), "homework_events", ["session_id"], unique=False)

    op.create_table("nudges",
    sa.Column("nudge_id", sa.String(length=64), nullable=False),
    sa.Column("session_id", sa.String(length=128), nullable=False),
    sa.Column("rule", sa.String(length=32), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("session_time_s", sa.Float(), nullable=True),
    sa.Column("previous_session_id", sa.String(length=128), nullable=True),
    sa.Column("previous_assignments", sa.JSON(), nullable=False),
    sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["session_id"], ["sessions.session_id"], name=op.f("fk_nudges_session_id"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("nudge_id", name=op.f("pk_nudges"))
    )
    op.create_index(op.f("ix_nudges_rule"), "nudges", ["rule"], unique=False)
    op.create_index(op.f("ix_nudges_session_id"), "nudges", ["session_id"], unique=False)

    op.create_table("feedback",
    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
    sa.Column("event_id", sa.String(length=64), nullable=False),
    sa.Column("user_id", sa.String(length=128), nullable=False),
    sa.Column("vote", sa.SmallInteger(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["event_id"], ["homework_events.event_id"], name=op.f("fk_feedback_event_id"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    sa.UniqueConstraint("event_id", "user_id", name=op.f("uq_feedback_event_id_user_id"))
    )
    op.create_index(op.f("ix_feedback_at"), "feedback", ["at"], unique=False)
    op.create_index(op.f("ix_feedback_event_id"), "feedback", ["event_id"], unique=False)



def downgrade() -> None:
    op.drop_index(op.f("ix_feedback_event_id"), table_name="feedback")
    op.drop_index(op.f("ix_feedback_at"), table_name="feedback")

    op.drop_table("feedback")
    op.drop_index(op.f("ix_nudges_session_id"), table_name="nudges")
    op.drop_index(op.f("ix_nudges_rule"), table_name="nudges")

    op.drop_table("nudges")
    op.drop_index(op.f("ix_homework_events_session_id"), table_name="homework_events")

    op.drop_table("homework_events")
    op.drop_index(op.f("ix_assignments_session_id"), table_name="assignments")
    op.drop_index(op.f("ix_assignments_category"), table_name="assignments")

    op.drop_table("assignments")
    op.drop_index("ix_sessions_therapist_started", table_name="sessions")
    op.drop_index(op.f("ix_sessions_started_at"), table_name="sessions")
    op.drop_index("ix_sessions_program_started", table_name="sessions")
    op.drop_index(op.f("ix_sessions_last_seen_at"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_ended_at"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_client_id"), table_name="sessions")

    op.drop_table("sessions")
    op.drop_index(op.f("ix_login_sessions_user_id"), table_name="login_sessions")
    op.drop_index(op.f("ix_login_sessions_expires_at"), table_name="login_sessions")

    op.drop_table("login_sessions")
    op.drop_index(op.f("ix_audit_log_user_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_session_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")

    op.drop_table("audit_log")
