"""Throughput of log-likelihood scoring: batched `audit.lm.loglik.score_texts` vs one sentence at a time.

Same model, same sentences, same run. Sentences are CrowS-Pairs sentences when ../shared/data is present
(the workload of the bias probes), else generated ones. Target: >= 5x at batch 32 on CPU.

It also times the bare forward passes (the model alone, on the same length-sorted padded batches vs one
sentence at a time): their ratio bounds what any batching scorer can gain on this machine, and the
scorer's own overhead is the gap between the two ratios.

    .venv/bin/python benchmarks/loglik.py [--n 256] [--batch-size 32] [--hidden 64] [--layers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
import time
from pathlib import Path

CROWS = Path(__file__).resolve().parents[2] / "shared" / "data" / "crows_pairs" / "crows_pairs_anonymized.csv"


def sentences(n: int, seed: int = 0) -> tuple[list[str], str]:
    if CROWS.exists():
        with open(CROWS, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        texts = [r["sent_more"] for r in rows] + [r["sent_less"] for r in rows]
        random.Random(seed).shuffle(texts)
        return texts[:n], "CrowS-Pairs sentences"
    words = "the doctor nurse said that patient would recover soon old man young woman went market".split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) + "." for _ in range(n)], "generated"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def forward_times(model, tok, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Seconds of bare model forwards: one sentence per call, and length-sorted padded batches."""
    import torch

    ids = sorted((tok(t)["input_ids"] for t in texts), key=len, reverse=True)
    with torch.inference_mode():
        t_one = timed(lambda: [model(input_ids=torch.tensor([i]), use_cache=False) for i in ids])

        def batched():
            for s in range(0, len(ids), batch_size):
                chunk = ids[s:s + batch_size]
                x = torch.zeros((len(chunk), len(chunk[0])), dtype=torch.long)
                for r, i in enumerate(chunk):
                    x[r, :len(i)] = torch.tensor(i)
                model(input_ids=x, use_cache=False)
        return t_one, timed(batched)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="sentences to score")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--arch", default="llama")
    ap.add_argument("--model", default=None, help="an HF model directory instead of the tiny one")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from audit.lm.loglik import score_texts
    from audit.lm.models import load
    from audit.lab.tiny import build_tiny_model

    texts, source = sentences(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        handle = load(args.model or build_tiny_model(Path(tmp) / "m", arch=args.arch, hidden=args.hidden,
                                                     layers=args.layers))
        model, tok = handle.model, handle.tokenizer
        score_texts(model, tok, texts[:8], batch_size=8)  # warm-up (allocations, kernels)
        batched = [None]
        t_batched = timed(lambda: batched.__setitem__(0, score_texts(model, tok, texts, batch_size=args.batch_size)))
        single = []
        t_single = timed(lambda: single.extend(score_texts(model, tok, [t], batch_size=1)[0] for t in texts))
        fwd_single, fwd_batched = forward_times(model, tok, texts, args.batch_size)
    max_err = max(abs(a.total - b.total) for a, b in zip(batched[0], single))
    n_tokens = sum(s.n_tokens for s in single)
    rows = [("one at a time", 1, t_single, len(texts) / t_single),
            ("batched", args.batch_size, t_batched, len(texts) / t_batched)]
    print(f"log-likelihood scoring: {len(texts)} {source} ({n_tokens} tokens), tiny {args.arch} "
          f"hidden={args.hidden} layers={args.layers}, torch threads={args.threads}, device=cpu")
    print(f"{'mode':<16}{'batch':>6}{'seconds':>10}{'sent/s':>10}")
    for mode, bs, sec, rate in rows:
        print(f"{mode:<16}{bs:>6}{sec:>10.2f}{rate:>10.1f}")
    ratio = t_single / t_batched
    print(f"speed-up batched/one-at-a-time: {ratio:.1f}x (target >= 5x)  "
          f"max |difference| of log-likelihoods: {max_err:.2e}")
    print(f"bare forward passes: one at a time {fwd_single:.2f} s, batched {fwd_batched:.2f} s: "
          f"{fwd_single / fwd_batched:.1f}x is what batching the model itself gains here; the scorer "
          f"adds {t_batched - fwd_batched:+.2f} s batched and {t_single - fwd_single:+.2f} s one at a time "
          f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
