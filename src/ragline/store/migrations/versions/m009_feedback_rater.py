"""Feedback per rater: one score per (trace, name, rater), and the API key that gave it.

Before this, feedback was one row per (trace, name) and a second key's score replaced the
first's without a trace of who gave either. Rows from before keep `rater` '' (the anonymous
slot, whose score id is the old one) and no key id."""

import sqlalchemy as sa
from alembic import op

revision = "m009"
down_revision = "m008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("rater", sa.String(250), nullable=False, server_default=""))
        batch.create_unique_constraint("uq_feedback_rater", ["trace_id", "name", "rater"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint("uq_feedback_rater", type_="unique")
        batch.drop_column("rater")
        batch.drop_column("key_id")
