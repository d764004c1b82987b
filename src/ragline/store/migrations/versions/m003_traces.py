"""Local trace store (spans) and user feedback."""

import sqlalchemy as sa
from alembic import op

revision = "m003"
down_revision = "m002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32)),
        sa.Column("start_time", sa.DateTime, nullable=False),
        sa.Column("end_time", sa.DateTime, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("session_id", sa.String(200)),
        sa.Column("user_id", sa.String(200)),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
    )
    op.create_index("ix_spans_roots", "spans", ["parent_span_id", "start_time"])
    op.create_index("ix_spans_session", "spans", ["session_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_feedback_trace", "feedback", ["trace_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("spans")
