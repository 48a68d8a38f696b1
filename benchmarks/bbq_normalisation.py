"""Which answer normalisation should BBQ's default convention use? Accuracy under each, on one model.

The default convention picks among the item's 3 answers by log-likelihood. A raw sum favours short
answers ("The grandson" over "Can't be determined"), which shows as chance accuracy and almost no
UNKNOWN answers on ambiguous items. This scores a seeded stratified sample once and reports, for
none / per token / per character, accuracy overall, on ambiguous and on disambiguated items, and how often
UNKNOWN is chosen.

    python benchmarks/bbq_normalisation.py --model /tmp/smollm2-hf [--per-file 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"


def stratified(items, per_file: int, seed: int = 0):
    """`per_file` items of each file, equally from each context_condition x question_polarity cell."""
    out = []
    for f in sorted({it.file for it in items}):
        cells: dict[tuple[str, str], list] = {}
        for it in items:
            if it.file == f:
                cells.setdefault((it.condition, it.polarity), []).append(it)
        rng = random.Random(f"{seed}:{Path(f).name}")
        for key in sorted(cells):
            out += rng.sample(cells[key], min(per_file // len(cells), len(cells[key])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--per-file", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from audit.lm.loglik import score_continuations
    from audit.lm.models import load
    from audit.probes.bbq.probe import load_items
    from audit.probes.bbq.scores import DEFAULT_PROMPT

    items = stratified(load_items(DATA), args.per_file)
    handle = load(args.model)
    contexts = [DEFAULT_PROMPT.format(context=it.context, question=it.question) for it in items for _ in it.answers]
    conts = [" " + a for it in items for a in it.answers]
    t0 = time.perf_counter()
    lls = score_continuations(handle.model, handle.tokenizer, contexts, conts, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    raw = np.array([s.total for s in lls]).reshape(-1, 3)
    ntok = np.array([s.n_tokens for s in lls], dtype=float).reshape(-1, 3)
    nchar = np.array([len(a) for it in items for a in it.answers], dtype=float).reshape(-1, 3)
    label = np.array([it.label for it in items])
    unknown = np.array([it.unknown for it in items])
    amb = np.array([it.condition == "ambig" for it in items])
    print(f"{len(items)} items ({args.per_file} per file, stratified), model {args.model}, {seconds:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"{'normalisation':<14}{'accuracy':>9}{'ambig':>8}{'disambig':>10}{'UNKNOWN chosen':>16}")
    for name, score in (("none", raw), ("token", raw / ntok), ("char", raw / nchar)):
        choice = score.argmax(1)
        ok = choice == label
        print(f"{name:<14}{ok.mean():>9.3f}{ok[amb].mean():>8.3f}{ok[~amb].mean():>10.3f}"
              f"{(choice == unknown).mean():>16.3f}")
    print(f"mean log-likelihood of the UNKNOWN answer on ambiguous items: {raw[amb, unknown[amb]].mean():.2f} "
          f"(other answers {np.mean([raw[i, j] for i in np.flatnonzero(amb) for j in range(3) if j != unknown[i]]):.2f})")


if __name__ == "__main__":
    main()
