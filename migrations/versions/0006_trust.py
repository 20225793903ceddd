"""Trust: limits counted in the database, opt-out/erasure bookkeeping, voice-note lengths.

Revision ID: 0006_trust
Revises: 0007_realtime
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_trust"
down_revision = "0007_realtime"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("limits_lifted_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("erasure_requested_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("audio_seconds", sa.Float(), nullable=True))
    op.create_table(
        "usage_counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("window", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", "window"),
    )
    op.create_table(
        "limit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("limit_name", sa.String(length=32), nullable=False),
        sa.Column("window_key", sa.String(length=96), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(), nullable=True),
        sa.Column("lifted_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "limit_name", "window_key", name="uq_limit_events_window"),
    )
    with op.batch_alter_table("limit_events") as batch:
        batch.create_index("ix_limit_events_user_id", ["user_id"], unique=False)
        batch.create_index("ix_limit_events_created", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("limit_events")
    op.drop_table("usage_counters")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("audio_seconds")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("erasure_requested_at")
        batch.drop_column("limits_lifted_at")
