"""Per-item eval details: per-leg retrieved ids, citations, latencies, finish reason, prompt and
judge versions and reasons."""

import sqlalchemy as sa
from alembic import op

revision = "m006"
down_revision = "m005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("eval_results") as batch:
        batch.add_column(sa.Column("details", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("eval_results") as batch:
        batch.drop_column("details")
