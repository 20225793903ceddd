"""The send boundary: any status string Twilio sends fits, and a turn's answer is decided before it is sent.

- messages.status and messages.error_code widen to 32 characters: Twilio's message statuses
  include ``partially_delivered`` (19) and new values may come; error codes are free text.
- turns.decided_at: when the answer and all its parts were stored (rows ``pending``) before
  the first send; from then on the turn is frozen (newer messages make the next turn).
- messages.send_started_at: when the send of an outbound part began, the lower bound of the
  window in which Twilio's Messages list is searched when the outcome is unknown.
- turns.usage: model calls and tokens (input, cached input, output) of the turn, for /stats.

Revision ID: 0004_send_boundary
Revises: 0003_operators
"""
from alembic import op
import sqlalchemy as sa

revision = "0004_send_boundary"
down_revision = "0003_operators"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("status", existing_type=sa.String(16), type_=sa.String(32), existing_nullable=False)
        batch.alter_column("error_code", existing_type=sa.String(16), type_=sa.String(32), existing_nullable=True)
        batch.add_column(sa.Column("send_started_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("decided_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("usage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("usage")
        batch.drop_column("decided_at")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("send_started_at")
        batch.alter_column("error_code", existing_type=sa.String(32), type_=sa.String(16), existing_nullable=True)
        batch.alter_column("status", existing_type=sa.String(32), type_=sa.String(16), existing_nullable=False)
