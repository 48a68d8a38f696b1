"""Same-process comparison with lm-evaluation-harness 0.4.13: agreement item by item, and speed.

One process, one loaded model, the same requests. Each workload runs lm-eval (A) and this toolkit (B) in
the order A-B-B-A, so that warm-up and machine-load drifts fall on both sides; the ratio is
mean(B) / mean(A) of the wall times. Workloads:

- CrowS-Pairs: both sentences of the first N pairs, each scored after BOS (lm-eval's `crows_pairs_english`);
- BBQ, lm-eval convention: a seeded stratified sample of items, 12 choices each (lm-eval's `bbq` task,
  built with its own `tasks/bbq/utils.py` functions on the local files).

Needs lm_eval importable (a separate venv: see README "Matches lm-evaluation-harness"); otherwise it says so
and exits 0.

    python benchmarks/peer_lmeval.py [--model DIR] [--crows 200] [--bbq 120] [--batch-size 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BBQ_FILES = ("Age.jsonl", "Disability_status.jsonl", "Physical_appearance.jsonl")


def lmeval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def lmeval_bbq_utils():
    """lm-eval's own `tasks/bbq/utils.py` (choices, biased answers, metric aggregation)."""
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "bbq" / "utils.py"
    spec = importlib.util.spec_from_file_location("lmeval_bbq_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def lmeval_model(model, tokenizer, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))


def lmeval_loglik(lm, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    from lm_eval.api.instance import Instance

    inst = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(requests)]
    return [tuple(x) for x in lm.loglikelihood(inst, disable_tqdm=True)]


def crows_rows(n: int) -> list[dict[str, Any]]:
    import csv

    with open(DATA / "crows_pairs" / "crows_pairs_anonymized.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{"line": i + 2, **r} for i, r in enumerate(rows[:n])]


def crows_requests(rows) -> list[tuple[str, str]]:
    """lm-eval's crows_pairs: empty context, no target delimiter, choices [sent_more, sent_less]."""
    return [("", r[s]) for r in rows for s in ("sent_more", "sent_less")]


def bbq_sample(n_per_file: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample stratified by file x context_condition x question_polarity, with file and line."""
    out = []
    for name in BBQ_FILES:
        cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
        with open(DATA / "bbq" / name, encoding="utf-8") as fh:
            for line, text in enumerate(fh, start=1):
                doc = json.loads(text)
                cells.setdefault((doc["context_condition"], doc["question_polarity"]), []).append(
                    {"file": name, "line": line, "doc": doc})
        rng = random.Random(f"{seed}:{name}")
        k = n_per_file // len(cells)
        for key in sorted(cells):
            out += sorted(rng.sample(cells[key], min(k, len(cells[key]))), key=lambda r: r["line"])
    return out


def lmeval_bbq_docs(sample, utils) -> list[dict[str, Any]]:
    """The docs lm-eval's `bbq` task would score: its `process_docs` on the raw rows."""
    import datasets

    ds = datasets.Dataset.from_list([json.loads(json.dumps(s["doc"])) for s in sample])
    return list(utils.process_docs(ds))


def bbq_lmeval_requests(docs, utils) -> list[tuple[str, str]]:
    """`{context}\\n\\nQ: {question}\\nA:` and ' ' + each of lm-eval's 12 choices."""
    return [(f"{d['context']}\n\nQ: {d['question']}\nA:", " " + c) for d in docs for c in utils.doc_to_choice(d)]


def lmeval_bbq_results(docs, lls: list[tuple[float, bool]], utils) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per item lm-eval's chosen index and process_results; the five aggregates by its functions."""
    per_item, k = [], 0
    for d in docs:
        n = len(utils.doc_to_choice(d))
        res = utils.process_results_multiple_choice(d, lls[k:k + n])
        per_item.append({"lls": [x[0] for x in lls[k:k + n]], "choice": int(max(range(n), key=lambda j: lls[k + j][0])),
                         "acc": res["acc"], "n_biased": res["disamb_bias_score"][1],
                         "n_non_unk": res["disamb_bias_score"][2], "disambig": bool(res["disamb_bias_score"][3])})
        k += n
    rows = [(p["acc"], p["n_biased"], p["n_non_unk"], p["disambig"]) for p in per_item]
    agg = {"acc": float(sum(p["acc"] for p in per_item) / len(per_item)),
           "accuracy_amb": float(utils.agg_accuracy_amb([(r[0], r[3]) for r in rows])),
           "accuracy_disamb": float(utils.agg_accuracy_disamb([(r[0], r[3]) for r in rows])),
           "amb_bias_score": float(utils.agg_amb_bias_scores(rows)),
           "disamb_bias_score": float(utils.agg_disamb_bias_scores(rows))}
    return per_item, agg


def bbq_aggregates(sample, docs, lls_lmeval, lls_audit, utils) -> dict[str, tuple[float, float]]:
    """lm-eval's five aggregates from its own functions on its scores, and this toolkit's
    (`convention=lm-eval`) on its own scores."""
    import numpy as np

    from audit.probes.bbq.probe import load_items
    from audit.probes.bbq.scores import Convention, bias_metrics

    _, theirs = lmeval_bbq_results(docs, lls_lmeval, utils)
    by_file = {f: {it.line: it for it in load_items(DATA / "bbq" / f)} for f in {s["file"] for s in sample}}
    items = [by_file[s["file"]][s["line"]] for s in sample]
    conv = Convention.from_options("lm-eval", None, None)
    k = len(lls_audit) // len(items)
    choice = np.array([x[0] for x in lls_audit]).reshape(len(items), k).argmax(1)
    ours = bias_metrics(items, conv.outcome_columns(items, choice), conv, n_resamples=10)
    return {m: (theirs[m], float("nan") if ours[m].value is None else ours[m].value) for m in theirs}


def abba(run_a: Callable[[], Any], run_b: Callable[[], Any], order: str = "abba") -> tuple[float, float, Any, Any]:
    """Mean wall times of A and B over the runs in `order` (A-B-B-A by default); the last outputs."""
    times: dict[str, list[float]] = {"a": [], "b": []}
    out = {}
    for who in order:
        t0 = time.perf_counter()
        out[who] = (run_a if who == "a" else run_b)()
        times[who].append(time.perf_counter() - t0)
    return sum(times["a"]) / len(times["a"]), sum(times["b"]) / len(times["b"]), out["a"], out["b"]


def load_model(path: str | None, tmp: Path):
    from audit.lm.models import load
    from audit.lab.tiny import build_tiny_model, build_tokenizer

    if path is None:
        path = str(build_tiny_model(tmp / "tiny", arch="llama", tokenizer=build_tokenizer(), seed=0))
    handle = load(path)
    handle.model.eval()
    return handle.model, handle.tokenizer, path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="HF model directory (default: the tiny test Llama)")
    ap.add_argument("--crows", type=int, default=200, help="CrowS pairs (first N)")
    ap.add_argument("--bbq", type=int, default=120, help="BBQ items, stratified over the 3 files (0: skip)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--order", default="ABBA", choices=("ABBA", "AB"),
                    help="ABBA for timing; AB runs each tool once (agreement on larger samples)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if not lmeval_available():
        print("lm_eval is not importable here: skipping the same-process comparison "
              "(install lm-eval==0.4.13 in a separate venv, see README)")
        return
    if not DATA.is_dir():
        print(f"{DATA} absent: skipping (the comparison runs on the shared benchmark files)")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    import torch

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # one truncation warning per long request

    torch.set_num_threads(args.threads)
    from audit.lm.loglik import score_continuations

    report: dict[str, Any] = {"threads": args.threads, "batch_size": args.batch_size,
                              "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        model, tok, path = load_model(args.model, Path(tmp))
        lm = lmeval_model(model, tok, args.batch_size)
        ours = lambda reqs: [(s.total, s.is_greedy) for s in score_continuations(  # noqa: E731
            model, tok, [c for c, _ in reqs], [k for _, k in reqs], batch_size=args.batch_size)]
        workloads = []
        if args.crows:
            workloads.append(("crows_pairs", crows_requests(crows_rows(args.crows)), 2))
        if args.bbq:
            utils = lmeval_bbq_utils()
            sample = bbq_sample(args.bbq // len(BBQ_FILES))
            docs = lmeval_bbq_docs(sample, utils)
            workloads.append(("bbq_lm-eval", bbq_lmeval_requests(docs, utils), len(utils.doc_to_choice(docs[0]))))
        print(f"model {path}; order {args.order}; torch threads {args.threads}; batch {args.batch_size}; "
              f"load average {report['load_average'][0]:.2f}")
        print(f"{'workload':<14}{'items':>7}{'lm-eval s/item':>16}{'audit s/item':>14}{'ratio':>8}"
              f"{'same choice':>13}{'max |dLL|':>11}")
        for name, reqs, per_item in workloads:
            ta, tb, la, lb = abba(lambda: lmeval_loglik(lm, reqs), lambda: ours(reqs), args.order.lower())
            n_items = len(reqs) // per_item
            choice = lambda lls: [max(range(per_item), key=lambda j: lls[i * per_item + j][0])  # noqa: E731
                                  for i in range(n_items)]
            same = sum(a == b for a, b in zip(choice(la), choice(lb)))
            err = max(abs(a[0] - b[0]) for a, b in zip(la, lb))
            print(f"{name:<14}{n_items:>7}{ta / n_items:>16.4f}{tb / n_items:>14.4f}{tb / ta:>8.2f}"
                  f"{same:>8}/{n_items:<4}{err:>11.1e}")
            if name == "bbq_lm-eval":
                report["bbq_aggregates"] = bbq_aggregates(sample, docs, la, lb, utils)
            report[name] = {"items": n_items, "lmeval_s": ta, "audit_s": tb, "ratio": tb / ta,
                            "same_choice": same, "max_abs_diff": err, "lmeval_lls": [x[0] for x in la],
                            "audit_lls": [x[0] for x in lb]}
    report["load_average_end"] = os.getloadavg()
    if "bbq_aggregates" in report:
        print(f"{'BBQ aggregate':<20}{'lm-eval':>10}{'audit':>10}")
        for metric, (theirs, ours_value) in report["bbq_aggregates"].items():
            print(f"{metric:<20}{theirs:>10.4f}{ours_value:>10.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
