"""Deterministic metrics: answers against gold (SQuAD's token F1 and exact match), citation
validity, and IR metrics of the retrieved documents (ir-measures / pytrec_eval)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

IR_METRICS = ("hit@1", "hit@5", "recall@5", "recall@10", "mrr@10", "ndcg@10")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# how the prompt (and models generally) decline: "I do not know", "the passages do not say"…
_REFUSAL = re.compile(
    r"\b(do not know|dont know|cannot answer|cant answer|unable to answer|no information|"
    r"not (?:mentioned|stated|provided|specified|given|contain|say|include)|"
    r"does not (?:mention|state|say|contain|provide|specify)|"
    r"do not (?:mention|state|say|contain|provide|specify))\b"
)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces
    (Rajpurkar et al. 2016, the official evaluate-v1.1.py)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best bag-of-tokens F1 against any gold answer (SQuAD's F1)."""
    return max(
        (_f1(normalize_answer(prediction).split(), normalize_answer(g).split()) for g in golds),
        default=0.0,
    )


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def gold_in_answer(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when a normalised gold answer appears inside the normalised prediction: fairer than
    exact match for generated sentences ("Paris is the capital" contains "paris")."""
    answer = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(g)} " in answer for g in golds if normalize_answer(g)))


def is_refusal(answer: str, finish_reason: str | None = None) -> bool:
    """The answer declines to answer: nothing was retrieved (`no_context`), or it says so."""
    if finish_reason == "no_context":
        return True
    return bool(_REFUSAL.search(normalize_answer(answer.replace("'", ""))))


def citation_validity(cited: int, invalid: int) -> float | None:
    """Share of the answer's [n] markers that name a passage it was given; None if it cites none."""
    total = cited + invalid
    return None if total == 0 else cited / total


def ir_scores(ranked_ids: Sequence[str], relevant: dict[str, int]) -> dict[str, float]:
    """hit@k, recall@k, MRR and nDCG@10 of one ranked list against graded relevance,
    computed by ir-measures (pytrec_eval underneath) so they match published figures."""
    import ir_measures
    from ir_measures import RR, R, Success, nDCG

    measures = {
        "hit@1": Success @ 1,
        "hit@5": Success @ 5,
        "recall@5": R @ 5,
        "recall@10": R @ 10,
        "mrr@10": RR @ 10,
        "ndcg@10": nDCG @ 10,
    }
    if not relevant:
        return {}
    qrels = [ir_measures.Qrel("q", doc, grade) for doc, grade in relevant.items()]
    run = [
        ir_measures.ScoredDoc("q", doc, float(len(ranked_ids) - rank))
        for rank, doc in enumerate(ranked_ids)
    ]
    if not run:
        return dict.fromkeys(measures, 0.0)
    values = ir_measures.calc_aggregate(list(measures.values()), qrels, run)
    return {name: float(values[measure]) for name, measure in measures.items()}
