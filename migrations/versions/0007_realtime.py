"""Realtime voice sessions: one row per try of the realtime path for a turn (outcome, fallback reason, latency).

Revision ID: 0007_realtime
Revises: 0005_takeover
"""
from alembic import op
import sqlalchemy as sa

revision = "0007_realtime"
down_revision = "0005_takeover"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "realtime_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("turn_id", sa.Integer(), sa.ForeignKey("turns.id"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("voice", sa.String(16), nullable=False),
        sa.Column("input_seconds", sa.Float(), nullable=True),
        sa.Column("output_seconds", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("first_audio_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_realtime_sessions_turn_id", "realtime_sessions", ["turn_id"])
    op.create_index("ix_realtime_sessions_created", "realtime_sessions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_realtime_sessions_created", table_name="realtime_sessions")
    op.drop_index("ix_realtime_sessions_turn_id", table_name="realtime_sessions")
    op.drop_table("realtime_sessions")
