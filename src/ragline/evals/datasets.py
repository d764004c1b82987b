"""Evaluation datasets: items (question, expected answers, relevant document ids), their
storage, and importers for JSONL, BEIR and SQuAD.

A document's id, for relevance, is its source file name without the extension
(`corpus/4983.txt` → `4983`), so a BEIR corpus ingested as `<_id>.txt` files lines up with its
qrels; the SQuAD importer writes its paragraphs that way too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from ragline.errors import InvalidRequestError, NotFoundError
from ragline.store.repository import utcnow
from ragline.store.schema import eval_datasets, eval_items
from ragline.tracing import attributes as attr


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    expected_answers: list[str] = field(default_factory=list)
    relevant: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def document_key(source: str) -> str:
    """The id a document has in `relevant`: its file name without extension."""
    return PurePath(source).stem


class EvalStore:
    """Datasets and their items in the ragline database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, name: str, items: Iterable[EvalItem], description: str | None = None) -> int:
        """Create the dataset (or add to it); items with a known id are replaced."""
        rows = [
            {
                "dataset": name,
                "id": i.id,
                "question": i.question,
                "expected_answers": i.expected_answers,
                "relevant": i.relevant,
                "metadata": i.metadata,
            }
            for i in items
        ]
        with self.engine.begin() as conn:
            if (
                conn.scalar(select(eval_datasets.c.name).where(eval_datasets.c.name == name))
                is None
            ):
                conn.execute(
                    insert(eval_datasets).values(
                        name=name, description=description, created_at=utcnow()
                    )
                )
            ids = [r["id"] for r in rows]
            for start in range(0, len(ids), 500):
                conn.execute(
                    delete(eval_items).where(
                        eval_items.c.dataset == name, eval_items.c.id.in_(ids[start : start + 500])
                    )
                )
            if rows:
                conn.execute(insert(eval_items), rows)
        return len(rows)

    def datasets(self) -> list[tuple[str, int]]:
        from sqlalchemy import func

        query = (
            select(eval_datasets.c.name, func.count(eval_items.c.id))
            .join(eval_items, eval_items.c.dataset == eval_datasets.c.name, isouter=True)
            .group_by(eval_datasets.c.name)
            .order_by(eval_datasets.c.name)
        )
        with self.engine.connect() as conn:
            return [(name, count) for name, count in conn.execute(query)]

    def items(self, name: str, limit: int | None = None) -> list[EvalItem]:
        query = select(eval_items).where(eval_items.c.dataset == name).order_by(eval_items.c.id)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        if not rows:
            raise NotFoundError(f"dataset {name!r} has no items (see `ragline eval dataset list`)")
        return [
            EvalItem(r.id, r.question, list(r.expected_answers), dict(r.relevant), dict(r.metadata))
            for r in rows
        ]


def read_jsonl(path: Path) -> Iterator[EvalItem]:
    """`{id, question, expected_answer?, relevant_ids?, metadata?}` per line. `expected_answer`
    may be a string or a list; `relevant_ids` a list (grade 1) or a {id: grade} object."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            expected = record.get("expected_answer") or []
            relevant = record.get("relevant_ids") or {}
            yield EvalItem(
                id=str(record.get("id", number)),
                question=str(record["question"]),
                expected_answers=[expected]
                if isinstance(expected, str)
                else [str(e) for e in expected],
                relevant={str(k): int(v) for k, v in relevant.items()}
                if isinstance(relevant, dict)
                else {str(r): 1 for r in relevant},
                metadata=dict(record.get("metadata") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequestError(f"{path}:{number}: not a dataset item ({exc})") from exc


def read_beir(folder: Path, split: str = "test") -> Iterator[EvalItem]:
    """BEIR: `queries.jsonl` and `qrels/<split>.tsv`; one item per query that has qrels."""
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.exists():
        raise InvalidRequestError(
            f"{qrels_file} does not exist (splits: {sorted(p.stem for p in (folder / 'qrels').glob('*.tsv'))})"
        )
    relevant: dict[str, dict[str, int]] = {}
    for line in qrels_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] != "query-id":
            relevant.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    for line in (folder / "queries.jsonl").read_text().splitlines():
        query = json.loads(line)
        if query["_id"] in relevant:
            yield EvalItem(
                query["_id"], query["text"], [], relevant[query["_id"]], {"source": "beir"}
            )


def read_squad(path: Path, answerable_only: bool = True) -> Iterator[EvalItem]:
    """SQuAD v2 JSON: one item per question with its gold answers; the relevant document is its
    paragraph (`squad_corpus`). Unanswerable questions are marked `unanswerable` when kept."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    for article in data:
        title = "".join(c if c.isalnum() else "_" for c in article["title"])[:80]
        for n, paragraph in enumerate(article["paragraphs"]):
            doc = f"{title}-{n}"
            for qa in paragraph["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa.get("answers", [])))
                if answerable_only and not answers:
                    continue
                metadata: dict[str, Any] = {"title": article["title"]}
                if not answers:  # SQuAD 2.0's unanswerable: the right answer is a refusal
                    metadata["unanswerable"] = True
                yield EvalItem(qa["id"], qa["question"], answers, {doc: 1}, metadata)


def squad_corpus(path: Path) -> Iterator[tuple[str, bytes]]:
    """SQuAD's paragraphs as documents `<title>-<n>.txt` (the ids `read_squad` points to)."""
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        title = "".join(c if c.isalnum() else "_" for c in article["title"])[:80]
        for n, paragraph in enumerate(article["paragraphs"]):
            text = f"{article['title']}\n\n{paragraph['context']}"
            yield f"{title}-{n}.txt", text.encode()


def beir_corpus(folder: Path) -> Iterator[tuple[str, bytes]]:
    """BEIR's `corpus.jsonl` as documents `<_id>.txt` (title, blank line, text)."""
    corpus = folder / "corpus.jsonl"
    if not corpus.exists():
        raise InvalidRequestError(f"{corpus} does not exist")
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                doc = json.loads(line)
                text = f"{doc.get('title') or ''}\n\n{doc.get('text') or ''}".strip()
                yield f"{doc['_id']}.txt", text.encode()


def read_negative_feedback(engine: Engine, since: datetime | None = None) -> Iterator[EvalItem]:
    """One item per trace that received negative feedback (value ≤ 0, from any rater; the
    oldest rating gives the item's comment) and recorded its question, oldest first (feedback
    newer than `since` only): the production questions that went wrong become regression
    tests, linked to their trace."""
    from ragline.store.schema import feedback, spans

    query = (
        select(
            feedback.c.trace_id,
            feedback.c.value,
            feedback.c.comment,
            spans.c.attributes,
            spans.c.name,
        )
        .join(spans, (spans.c.trace_id == feedback.c.trace_id) & spans.c.parent_span_id.is_(None))
        .where(feedback.c.value <= 0)
        .order_by(feedback.c.created_at)
    )
    if since is not None:
        query = query.where(feedback.c.created_at >= since)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    seen: set[str] = set()
    for row in rows:
        attributes = row.attributes or {}
        question = attributes.get(attr.INPUT_VALUE)
        if not question or row.trace_id in seen:  # capture was off, or rated down twice
            continue
        seen.add(row.trace_id)
        yield EvalItem(
            id=row.trace_id,
            question=str(question),
            metadata={
                "trace_id": row.trace_id,
                "feedback": row.value,
                "comment": row.comment,
                "collection": attributes.get(attr.COLLECTION),
                "answer": attributes.get(attr.OUTPUT_VALUE),
            },
        )
