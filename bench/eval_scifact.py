"""SciFact (BEIR, train qrels) through `ragline eval`: BM25 only, dense only, hybrid, hybrid+MMR.

Imports the queries and qrels with `ragline eval dataset import --beir --collection beir`, which
also ingests the corpus as `<_id>.txt` documents, runs each configuration in retrieval mode
and prints `ragline eval compare` of each against hybrid.

    python bench/eval_scifact.py --data ../shared/data/scifact [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {
    "hybrid": [],
    "bm25": ["--set", "retrieval.legs=sparse"],
    "dense": ["--set", "retrieval.legs=dense"],
    "hybrid-mmr": ["--set", "retrieval.mmr=true"],
}


def ragline(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ragline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"ragline {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--home", type=Path, help="ragline home [a temporary folder]")
    parser.add_argument("--out", type=Path, default=Path("bench/results/eval_scifact.json"))
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="ragline-eval-scifact-"))
    env = {**os.environ, "RAGLINE_HOME": str(home), "RAGLINE_TRACING__SAMPLE_RATE": "0"}
    # the dataset import also ingests corpus.jsonl as `<_id>.txt` documents (skipped when
    # unchanged, so a rerun with --home is cheap)
    print(
        ragline(
            env,
            *("eval", "dataset", "import", "scifact", "--beir", str(args.data)),
            *("--split", args.split, "--collection", "beir"),
        ).splitlines()[-1:]
    )
    summaries = {}
    for name, overrides in RUNS.items():
        ragline(
            env,
            "eval",
            "run",
            "scifact",
            "--name",
            name,
            "-c",
            "beir",
            "--mode",
            "retrieval",
            *overrides,
        )
    from ragline.config import Settings
    from ragline.evals.runs import EvalRunner
    from ragline.factory import Runtime

    with Runtime(Settings(home=home)) as rt:
        runner = EvalRunner(rt)
        for name in RUNS:
            summaries[name] = runner.get(name).summary
    for name in ("bm25", "dense", "hybrid-mmr"):
        print(ragline(env, "eval", "compare", "hybrid", name, check=False))
    print(json.dumps(summaries, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
