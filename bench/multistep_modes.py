"""Plain RAG vs decompose vs summarize on two-hop questions built from SQuAD 2.0.

Each question joins two answerable SQuAD questions about two different paragraphs of one
article ("When was the Duchy founded, and who was the Norse leader?"), so a good answer needs
both paragraphs. For each mode, over the same questions and the same index:
- recall@10 of the two paragraphs, hit@5 (ir-measures, from `ragline eval`);
- parts answered: the share of the two gold answers found in the answer (SQuAD normalisation);
- latency P50 and tokens per question (all LLM calls of the mode).

    python bench/multistep_modes.py --data ../shared/data/squad_v2_dev/dev-v2.0.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from sqlalchemy import select

from ragline.config import Settings
from ragline.evals.datasets import EvalItem, EvalStore, squad_corpus
from ragline.evals.metrics import normalize_answer
from ragline.evals.runs import EvalRunner
from ragline.factory import Runtime
from ragline.store.schema import eval_results, eval_runs

MODES = ("answer", "decompose", "summarize")


def two_hop_items(path: Path, articles: int, limit: int) -> list[EvalItem]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"][:articles]
    items = []
    for article in data:
        title = "".join(c if c.isalnum() else "_" for c in article["title"])[:80]
        firsts = []  # the first answerable question of each paragraph
        for n, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                if answers:
                    firsts.append((f"{title}-{n}", qa["question"].strip(), answers))
                    break
        for (doc_a, q_a, gold_a), (doc_b, q_b, gold_b) in zip(
            firsts[0::2], firsts[1::2], strict=False
        ):
            question = f"{q_a.rstrip('?')}, and {q_b[0].lower()}{q_b[1:]}"
            items.append(
                EvalItem(
                    f"{doc_a}+{doc_b}",
                    question,
                    [*gold_a, *gold_b],
                    {doc_a: 1, doc_b: 1},
                    {"parts": [gold_a, gold_b]},
                )
            )
    return items[:limit]


def parts_answered(answer: str, parts: list[list[str]]) -> float:
    text = f" {normalize_answer(answer)} "
    found = [any(f" {normalize_answer(g)} " in text for g in gold) for gold in parts]
    return sum(found) / len(parts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="SQuAD v2 JSON file")
    parser.add_argument("--articles", type=int, default=3, help="articles to use [3]")
    parser.add_argument("--questions", type=int, default=20, help="two-hop questions [20]")
    parser.add_argument("--home", type=Path, help="ragline home [a temporary folder]")
    parser.add_argument("--out", type=Path, default=Path("bench/results/multistep_modes.json"))
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="ragline-multistep-"))
    settings = Settings(home=home, tracing={"sample_rate": 0.0}, cache={"enabled": False})
    items = two_hop_items(args.data, args.articles, args.questions)
    titles = {item.id.split("-")[0] for item in items}
    with Runtime(settings) as rt:
        for source, content in squad_corpus(args.data):
            if source.split("-")[0] in titles:
                rt.store.submit("squad", source, content, 3)
        worker = rt.worker()
        while worker.run_once() is not None:
            pass
        rt.sync_index()
        EvalStore(rt.store.engine).save("two-hop", items)
        runner = EvalRunner(rt)
        figures = {}
        for mode in MODES:
            name = f"two-hop-{mode}-{home.name}"
            info = runner.run("two-hop", "squad", name, mode)
            with rt.store.engine.connect() as conn:
                run_id = conn.execute(
                    select(eval_runs.c.id).where(eval_runs.c.name == name)
                ).scalar_one()
                answers = dict(
                    conn.execute(
                        select(eval_results.c.item_id, eval_results.c.answer).where(
                            eval_results.c.run_id == run_id
                        )
                    ).all()
                )
            scores = runner.scores(name)
            by_id = {item.id: item for item in items}
            parts = [
                parts_answered(answers.get(i) or "", by_id[i].metadata["parts"]) for i in by_id
            ]
            figures[mode] = {
                "questions": len(items),
                "errors": info.summary["errors"],
                "recall@10": round(statistics.fmean(scores["recall@10"].values()), 4),
                "hit@5": round(statistics.fmean(scores["hit@5"].values()), 4),
                "parts_answered": round(statistics.fmean(parts), 4),
                "latency_p50_ms": round(statistics.median(scores["latency_ms"].values()), 1),
                "tokens_mean": round(statistics.fmean(scores.get("total_tokens", {0: 0}).values())),
            }
            print(mode, json.dumps(figures[mode]), flush=True)
    print(json.dumps(figures, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
