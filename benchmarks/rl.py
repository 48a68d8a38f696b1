"""Environment steps per second with ModelPolicy: 32 environments batched vs one environment at a time.

Same tiny Llama-style model, same environment (Lending by default), same 32 replicates (seeds 0..31),
same horizon, in the same process. "batched" scores the prompts of all live environments in one policy
call per step (the probe's way); "one at a time" makes one policy call per environment per step. Both
must take the same decisions (checked), so the ratio is the speed-up of batching alone.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl.py [--envs 32] [--horizon 20] [--hidden 64] [--env lending]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AUDIT_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=32, help="vectorised environments (replicates)")
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--env", default="lending")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--arch", default="llama")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per mode (the best is kept)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from audit.lm.models import load
    from audit.rl.policy import ModelPolicy
    from audit.rl.runner import run_episodes
    from audit.lab.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="audit-bench-rl-"))
    os.environ.setdefault("AUDIT_CACHE_DIR", str(work / "hash-cache"))
    model_dir = build_tiny_model(work / "model", arch=args.arch, hidden=args.hidden, layers=args.layers, seed=0)
    handle = load(model_dir, device="cpu")
    seeds = list(range(args.envs))

    def run(batch_envs):
        factory = lambda env: ModelPolicy(env, handle.model, handle.tokenizer, batch_size=args.envs)  # noqa: E731
        best, rollout = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rollout = run_episodes(args.env, factory, seeds=seeds, episodes=1, horizon=args.horizon,
                                   batch_envs=batch_envs)
            best = min(best, time.perf_counter() - t0)
        return best, rollout

    run(None)  # warm-up (first forward passes, allocator)
    t_batched, r_batched = run(None)
    t_single, r_single = run(1)
    steps = r_batched.n_steps
    same = bool(np.array_equal(r_batched.actions, r_single.actions))

    print(f"\nModelPolicy on {args.env}: {args.envs} environments x {args.horizon} steps = {steps} env steps; "
          f"tiny {args.arch} hidden {args.hidden}, {args.layers} layers; torch threads {torch.get_num_threads()}")
    print(f"{'mode':<28}{'seconds':>10}{'env steps/s':>14}{'ratio':>8}")
    print(f"{'one environment at a time':<28}{t_single:>10.2f}{steps / t_single:>14.1f}{1.0:>8.2f}")
    print(f"{f'batched over {args.envs} envs':<28}{t_batched:>10.2f}{steps / t_batched:>14.1f}"
          f"{t_single / t_batched:>8.2f}")
    print(f"same decisions in both modes: {same}")


if __name__ == "__main__":
    main()
