"""Cost of each fine-tuning method on a ~5M-parameter Llama-style model, as ratios to full fine-tuning
measured in the same run.

Each method trains in its own subprocess (peak RSS is a per-process high-water mark, so sharing a process
would hide every method behind the first), with the same data, steps, batch and seed, through the one
training loop (audit.finetune.train). Reported per method:

- seconds per optimizer step (median over steps after the first two, which include warm-up costs),
- peak process RSS, and the RSS growth during training over the process's RSS just before the model is
  built (imports and data excluded),
- optimizer-state bytes (Adam moments, GaLore projectors), trainable parameters, first/last loss.

    .venv/bin/python benchmarks/finetune_methods.py [--steps 20] [--methods full,lora,...] [--hidden 256]
    .venv/bin/python benchmarks/finetune_methods.py --base DIR [--lr-full 2e-5]   # a real checkpoint instead

Setup seconds (model build, quantization, ICQ search, ...: the time before the first step) are reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_METHODS = ["full", "lora", "dora", "qlora", "galore", "loftq", "cloq", "irqlora"]


def worker(args) -> None:
    """Train one method and print one JSON line with its measurements."""
    import resource
    import warnings

    from audit.finetune.api import cached_tokenizer
    from audit.finetune.base import FinetuneConfig
    from audit.finetune.data import load_training_data
    from audit.finetune.train import train_model

    warnings.simplefilter("ignore")
    tok = cached_tokenizer(Path(args.model))
    data = load_training_data(args.data, tok, max_length=args.max_length)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step, loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    cfg = FinetuneConfig(method=args.worker, model=args.model, data=args.data, out=args.out, rank=args.rank,
                         steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                         seed=0, galore_rank=args.rank, galore_update_proj_gap=args.steps // 2 or 1,
                         calibration_samples=16, overwrite=True)
    last[0] = start = time.perf_counter()
    out, _ = train_model(cfg, tokenizer=tok, data=data, on_step=on_step)
    total = time.perf_counter() - start
    m = json.loads((Path(out) / "manifest.json").read_text())
    steady = times[2:] if len(times) > 4 else times
    print(json.dumps({"method": args.worker, "s_per_step": statistics.median(steady),
                      "peak_rss": m["peak_rss_bytes"], "rss_growth": m["peak_rss_bytes"] - baseline,
                      "opt_bytes": m["optimizer_state_bytes"], "trainable": m["trainable_parameters"],
                      "total": m["total_parameters"], "first_loss": m["initial_loss"],
                      "last_loss": m["final_loss"], "setup_s": times[0] - (statistics.median(steady) if steady else 0),
                      "mean_first4": statistics.mean(x["loss"] for x in m["loss_curve"][:4]),
                      "mean_last4": statistics.mean(x["loss"] for x in m["loss_curve"][-4:]),
                      "wall_s": total}))


def build_inputs(tmp: Path, hidden: int, layers: int, rows: int) -> tuple[Path, Path]:
    from audit.lab.tiny import DEFAULT_CORPUS, build_tiny_model

    model_dir = build_tiny_model(tmp / "base", arch="llama", hidden=hidden, layers=layers, heads=max(1, hidden // 64),
                                 intermediate=4 * hidden, seed=0)
    sentences = [s.strip() for s in DEFAULT_CORPUS.replace("?", ".").split(".") if s.strip()]
    data = tmp / "train.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"{sentences[i % len(sentences)]}. {sentences[(i * 7 + 3) % len(sentences)]}."})
                              for i in range(rows)), encoding="utf-8")
    return model_dir, data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-full", type=float, default=None, help="rate for full and galore (default: --lr)")
    p.add_argument("--base", default=None, help="a real causal LM directory instead of the tiny built model")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model_dir, data = build_inputs(tmp, args.hidden, args.layers, args.rows)
        if args.base:
            model_dir = Path(args.base)
        results = []
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            cmd = [sys.executable, __file__, "--worker", method, "--model", str(model_dir), "--data", str(data),
                   "--out", str(tmp / method), "--steps", str(args.steps), "--rank", str(args.rank),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--lr", str(args.lr_full if args.lr_full and method in ("full", "galore") else args.lr)]
            env = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"# {method}: failed ({err})", file=sys.stderr)
                continue
            results.append(json.loads(lines[-1]))
    if not results:
        sys.exit("no method ran")
    ref = next((r for r in results if r["method"] == "full"), results[0])
    n_params = ref["total"]
    print(f"\nFine-tuning cost, {'model ' + args.base if args.base else 'Llama-style model'} with {n_params / 1e6:.2f}M parameters "
          f"{'' if args.base else f'(hidden {args.hidden}, {args.layers} layers), '}rank {args.rank}, batch {args.batch_size} x "
          f"{args.max_length} tokens, {args.steps} steps, torch {torch.__version__}, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
          f"threads {torch.get_num_threads()}; ratios are to full fine-tuning in the same run.\n")
    print("| method | trainable params | s/step | x full | peak RSS MiB | x full | RSS growth MiB | x full "
          "| optimizer state MiB | x full | loss first -> last | mean loss steps 1-4 -> last 4 | setup s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    mib = 2 ** 20
    for r in results:
        print(f"| {r['method']} | {r['trainable']:,} | {r['s_per_step']:.4f} | {r['s_per_step'] / ref['s_per_step']:.2f} "
              f"| {r['peak_rss'] / mib:.0f} | {r['peak_rss'] / ref['peak_rss']:.2f} "
              f"| {r['rss_growth'] / mib:.1f} | {r['rss_growth'] / max(1, ref['rss_growth']):.2f} "
              f"| {r['opt_bytes'] / mib:.2f} | {r['opt_bytes'] / ref['opt_bytes']:.3f} "
              f"| {r['first_loss']:.3f} -> {r['last_loss']:.3f} | {r['mean_first4']:.3f} -> {r['mean_last4']:.3f} "
              f"| {r['setup_s']:.1f} |")


if __name__ == "__main__":
    main()
