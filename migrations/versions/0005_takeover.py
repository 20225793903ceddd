"""Human takeover: operator authors on messages, handoff ownership and deadlines, team
notifications (retried until sent) and per-operator read marks.

Revision ID: 0005_takeover
Revises: 0004_send_boundary
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_takeover"
down_revision = "0004_send_boundary"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("operator_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_messages_operator_id", "operators", ["operator_id"], ["id"], ondelete="SET NULL")
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("operator_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("answered_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("answer_due_at", sa.DateTime(), nullable=True))
        batch.create_foreign_key("fk_handoffs_operator_id", "operators", ["operator_id"], ["id"], ondelete="SET NULL")

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_sid", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["handoff_id"], ["handoffs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.create_index("ix_notifications_handoff_id", ["handoff_id"], unique=False)
        batch.create_index("ix_notifications_status_next", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "conversation_reads",
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("read_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("operator_id", "user_id"),
    )


def downgrade() -> None:
    op.drop_table("conversation_reads")
    op.drop_table("notifications")
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_constraint("fk_handoffs_operator_id", type_="foreignkey")
        batch.drop_column("answer_due_at")
        batch.drop_column("answered_at")
        batch.drop_column("operator_id")
        batch.drop_column("source")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("fk_messages_operator_id", type_="foreignkey")
        batch.drop_column("operator_id")
