"""Benchmark of the shift probe (plain script; prints tables with ratios measured in the same run).

1. Throughput of the KL pass (base vs tuned logits -> per-token KL/JS -> streaming summaries) on a
   ~5M-parameter Llama-style model with a LoRA r=8 adapter, two ways in the same run:
     toggle    one model in memory, base logits with the adapter disabled (what the probe does),
     separate  the merged tuned model and the base model loaded side by side.
2. Memory as the corpus grows: the whole probe on a 1x and a 10x corpus, each in a fresh process,
   peak RSS (ru_maxrss) and the Python/numpy heap peak (tracemalloc) while the probe runs.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/shift.py [--threads 1] [--sequences 96]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AUDIT_NO_PROGRESS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def corpus_texts(n: int, lines_per_text: int = 4, seed: int = 0) -> list[str]:
    """n texts of a few neutral sentences each (about 60 tokens with the tiny tokenizer)."""
    from audit.probes.shift.corpora import NEUTRAL_CORPUS

    lines = [x for x in NEUTRAL_CORPUS.read_text().splitlines() if x.strip()]
    rng = random.Random(seed)
    return [" ".join(rng.sample(lines, lines_per_text)) for _ in range(n)]


def build_models(root: Path, hidden: int, layers: int, rank: int) -> dict[str, Path]:
    """Base model, LoRA adapter (non-zero B) on every projection, and the merged full model."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from audit.lab.tiny import build_tiny_model, build_tokenizer

    tok = build_tokenizer()
    base = build_tiny_model(root / "base", "llama", tokenizer=tok, hidden=hidden, layers=layers,
                            intermediate=4 * hidden)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=rank, lora_alpha=2 * rank, task_type="CAUSAL_LM",
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    model.save_pretrained(str(root / "adapter"))
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(root / "adapter"))
    merged = merged.merge_and_unload()
    merged.save_pretrained(str(root / "merged"))
    tok.save_pretrained(str(root / "merged"))
    return {"base": base, "adapter": root / "adapter", "merged": root / "merged"}


def kl_pass(sides, tokenizer, texts: list[str], batch_size: int, max_length: int) -> tuple[int, float, float]:
    """Tokens processed, seconds, mean KL(base||tuned): the probe's own batching and accumulation."""
    from audit.probes.shift.probe import SliceStats, batches, encode, side_logits

    st = SliceStats("bench")
    encoded = encode(tokenizer, texts, max_length)
    t0 = time.perf_counter()
    for idx, ids, mask in batches(encoded, batch_size, tokenizer.pad_token_id):
        st.add_batch(idx, side_logits(sides, ids, mask), mask)
    seconds = time.perf_counter() - t0
    n = int(sum(st.per_seq["n"]))
    return n, seconds, sum(st.per_seq["kl_base_tuned"]) / n


def throughput(args, paths: dict[str, Path]) -> None:
    from audit.lm.models import load
    from audit.probes import ProbeContext
    from audit.probes.shift.probe import build_sides

    texts = corpus_texts(args.sequences)
    adapter = load(paths["adapter"])
    n_params = adapter.describe().n_parameters
    toggle_sides, _ = build_sides(ProbeContext(model=adapter, out_dir=Path(".")))
    tuned, base = load(paths["merged"]), load(paths["base"])
    separate_sides, _ = build_sides(ProbeContext(model=tuned, base=base, out_dir=Path("."),
                                                 options={"base_source": "separate"}))
    results = {}
    kl_pass(toggle_sides, adapter.tokenizer, texts[:args.batch_size], args.batch_size, args.max_length)  # warm-up
    kl_pass(separate_sides, tuned.tokenizer, texts[:args.batch_size], args.batch_size, args.max_length)
    for _ in range(args.repeats):  # interleaved, best of N: the CPU is shared
        for name, sides, tok in (("toggle", toggle_sides, adapter.tokenizer), ("separate", separate_sides, tuned.tokenizer)):
            n, s, mean_kl = kl_pass(sides, tok, texts, args.batch_size, args.max_length)
            best = results.get(name)
            if best is None or s < best[1]:
                results[name] = (n, s, mean_kl)
    adapter_params = adapter.describe().n_trainable_adapter_parameters or 0
    print(f"\nKL pass throughput: Llama-style, {n_params / 1e6:.2f}M parameters (hidden {args.hidden}, "
          f"{args.layers} layers), LoRA r={args.rank} on all projections ({adapter_params / 1e3:.0f}k), "
          f"{args.sequences} sequences, batch {args.batch_size}, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'path':<10}{'tokens':>9}{'seconds':>10}{'tokens/s':>11}{'weights in memory':>20}{'mean KL':>12}")
    mem = {"toggle": n_params + adapter_params, "separate": 2 * n_params}
    for name, (n, s, mean_kl) in results.items():
        print(f"{name:<10}{n:>9}{s:>10.2f}{n / s:>11.0f}{mem[name] / 1e6:>18.2f}M{mean_kl:>12.5f}")
    ratio = (results["toggle"][0] / results["toggle"][1]) / (results["separate"][0] / results["separate"][1])
    print(f"toggle / separate tokens/s ratio: {ratio:.2f}  (weights in memory ratio: "
          f"{mem['toggle'] / mem['separate']:.2f}; mean KL differs by "
          f"{abs(results['toggle'][2] - results['separate'][2]):.2e}, merged-vs-adapter float error)")


def memory_child(args) -> None:
    """Run the whole probe once on `--scale` x the corpus; print peak memory as JSON."""
    import tracemalloc

    import torch

    torch.set_num_threads(args.threads)
    from audit.lm.models import load
    from audit.probes import ProbeContext
    from audit.probes.shift.probe import run

    work = Path(args.workdir)
    corpus = work / f"corpus_{args.scale}x.txt"
    corpus.write_text("\n".join(corpus_texts(args.memory_sequences * args.scale, seed=args.scale)) + "\n")
    handle = load(Path(args.adapter))
    out = work / f"out_{args.scale}x"
    out.mkdir(exist_ok=True)
    ctx = ProbeContext(model=handle, out_dir=out, batch_size=args.batch_size,
                       options={"corpora": [str(corpus)], "max_length": args.max_length, "bootstrap": 200})
    # warm-up on a few texts so allocator pools and lazy imports are in the baseline
    warm = work / "warm.txt"
    warm.write_text("\n".join(corpus_texts(args.batch_size)) + "\n")
    run(ProbeContext(model=handle, out_dir=out, batch_size=args.batch_size,
                     options={"corpora": [str(warm)], "max_length": args.max_length, "bootstrap": 10}))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    result = run(ctx)
    seconds = time.perf_counter() - t0
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = result.tables["divergence_by_slice"][0]
    print(json.dumps({"scale": args.scale, "tokens": row["n_tokens"], "sequences": row["n_sequences"],
                      "seconds": seconds, "rss_peak_kb": rss_after, "rss_before_kb": rss_before,
                      "heap_peak_bytes": heap_peak, "quantiles_exact": row["quantiles_exact"]}))


def memory(args, paths: dict[str, Path], work: Path) -> None:
    rows = []
    for scale in (1, 10):
        cmd = [sys.executable, __file__, "--memory-child", "--scale", str(scale), "--adapter", str(paths["adapter"]),
               "--workdir", str(work), "--threads", str(args.threads), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--memory-sequences", str(args.memory_sequences)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\nMemory of the whole shift probe (divergences + lens + watch mass + weight delta), "
          f"2-layer hidden-64 Llama + LoRA, batch {args.batch_size}, fresh process per size")
    print(f"{'corpus':<8}{'tokens':>9}{'seconds':>9}{'peak RSS MiB':>14}{'RSS growth during probe':>25}"
          f"{'py/numpy heap peak':>20}{'quantiles':>11}")
    for r in rows:
        growth = (r["rss_peak_kb"] - r["rss_before_kb"]) / 1024
        print(f"{str(r['scale']) + 'x':<8}{r['tokens']:>9}{r['seconds']:>9.1f}{r['rss_peak_kb'] / 1024:>14.1f}"
              f"{growth:>23.1f}MB{r['heap_peak_bytes'] / 2**20:>18.2f}MB"
              f"{'exact' if r['quantiles_exact'] else 'histogram':>11}")
    a, b = rows
    print(f"10x / 1x: tokens {b['tokens'] / a['tokens']:.1f}x, peak RSS {b['rss_peak_kb'] / a['rss_peak_kb']:.3f}x, "
          f"heap peak {b['heap_peak_bytes'] / max(1, a['heap_peak_bytes']):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--sequences", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--memory-sequences", type=int, default=100)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--adapter", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-shift-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("AUDIT_CACHE_DIR", str(work / "cache"))
        paths = build_models(work / "m5", args.hidden, args.layers, args.rank)
        throughput(args, paths)
        if not args.skip_memory:
            small = build_models(work / "tiny", 64, 2, 4)
            memory(args, small, work)


if __name__ == "__main__":
    main()
