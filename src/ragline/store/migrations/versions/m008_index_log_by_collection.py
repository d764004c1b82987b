"""An index on the index log by (collection, seq): cache keys ask for a collection's last change
that the index has applied (`Store.applied_seq`), a seek instead of a scan of the whole log."""

from alembic import op

revision = "m008"
down_revision = "m007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_index_log_collection_seq", "index_log", ["collection", "seq"])


def downgrade() -> None:
    op.drop_index("ix_index_log_collection_seq", table_name="index_log")
