"""Peak memory of two jobs whose inputs grow without bound: a probe with a large generation cache, and a
report over a large samples log. Memory must stay flat (issue 12): the cache index keeps only the run's
keys, and compare/report stream samples.jsonl.

    python benchmarks/memory_streaming.py --code /path/to/checkout [--code /other/checkout] [--work DIR]

Each --code runs the same two jobs with that checkout on PYTHONPATH (before/after comparisons); peak RSS
is the child's own ru_maxrss (os.wait4), so the numbers do not include this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

AUDIT = str(Path(sys.executable).with_name("audit"))
TOX = ["-o", "k=1", "-o", "limit=30", "-o", "max_new_tokens=8", "-o", "resamples=200"]


def peak_rss_mb(argv: list[str], env: dict) -> float:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024


def pad_cache(cache: Path, mb: int) -> None:
    """Append `mb` MB of other prompts' continuations to every scope the first run created."""
    rng = random.Random(0)
    for scope in cache.glob("generations/*/*"):
        with open(scope / "shard-0-padding.jsonl", "w", encoding="utf-8") as fh:
            written = 0
            while written < mb << 20:
                key = hashlib.sha256(str(rng.random()).encode()).hexdigest()
                line = json.dumps({"key": key, "continuation": " ".join(["word"] * rng.randint(20, 60))}) + "\n"
                fh.write(line)
                written += len(line)


def big_samples_run(model_dir: Path, out: Path, mb: int, env: dict) -> None:
    """A real toxicity run, then its samples log grown to `mb` MB with consistent rows."""
    subprocess.run([AUDIT, "probe", "--probes", "toxicity", "--model", str(model_dir), "--out", str(out), *TOX],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    samples = out / "toxicity" / "samples.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    with open(samples, "a", encoding="utf-8") as fh:
        i = 0
        while samples.stat().st_size < mb << 20:
            for r in rows:
                fh.write(json.dumps({**r, "prompt": f"{r.get('prompt')} #{i}", "continuation":
                                     (r.get("continuation") or "") + " filler" * 40}) + "\n")
            i += 1
            fh.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", action="append", required=True, help="checkout to put on PYTHONPATH (repeatable)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--cache-mb", type=int, default=100)
    ap.add_argument("--samples-mb", type=int, default=50)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="audit-mem-"))
    base_env = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": args.code[-1]}
    model = work / "model"
    if not model.exists():
        subprocess.run([sys.executable, "-c", f"from audit.lab.tiny import build_tiny_model; "
                                              f"build_tiny_model({str(model)!r}, seed=0)"], env=base_env, check=True)
    rows = []
    for code in args.code:
        # Older checkouts keep the generation cache in OUT/../.audit-cache, newer ones in AUDIT_CACHE_DIR:
        # both point at the same directory here, so both read the same padded cache.
        tag = hashlib.sha256(code.encode()).hexdigest()[:6]
        probe = [AUDIT, "probe", "--probes", "toxicity", "--model", str(model), *TOX]
        fresh = work / f"fresh-{tag}"
        env = {**base_env, "PYTHONPATH": code, "AUDIT_CACHE_DIR": str(fresh / ".audit-cache")}
        empty = peak_rss_mb([*probe, "--out", str(fresh / "run")], env)
        big_dir = work / "big"
        env["AUDIT_CACHE_DIR"] = str(big_dir / ".audit-cache")
        if not (big_dir / "seed").exists():
            peak_rss_mb([*probe, "--out", str(big_dir / "seed")], env)
            pad_cache(big_dir / ".audit-cache", args.cache_mb)
        big = peak_rss_mb([*probe, "--out", str(big_dir / f"run-{tag}")], env)
        env["AUDIT_CACHE_DIR"] = str(work / "cache-report")
        small_run, large_run = work / "run-small", work / "run-large"
        if not large_run.exists():
            big_samples_run(model, small_run, 0, env)
            big_samples_run(model, large_run, args.samples_mb, env)
        rep_small = peak_rss_mb([AUDIT, "report", str(small_run), "--out", str(work / f"small-{tag}.html")], env)
        rep_large = peak_rss_mb([AUDIT, "report", str(large_run), "--base", str(small_run),
                                 "--out", str(work / f"large-{tag}.html")], env)
        rows.append((code, empty, big, rep_small, rep_large))
    print(f"| code | 30-prompt toxicity run, no cache | same, {args.cache_mb} MB cache present | audit report, "
          f"small samples | audit report, {args.samples_mb} MB samples |")
    print("|---|---|---|---|---|")
    for code, *vals in rows:
        print(f"| {code} | " + " | ".join(f"{v:.0f} MB" for v in vals) + " |")


if __name__ == "__main__":
    main()
