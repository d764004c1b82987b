"""The embedding model each collection's vectors come from (`EmbeddingSettings.fingerprint`).

NULL until a document is indexed: collections from before this migration are adopted by the
first embedder that stores chunks in them or checks them."""

import sqlalchemy as sa
from alembic import op

revision = "m007"
down_revision = "m006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("embedder", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("embedder")
