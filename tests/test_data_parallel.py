"""Data-parallel probes (torchrun, gloo on CPU): the same rows and metrics as one process; a dead rank leaves
the run unfinished and a re-run completes from the generation cache. The engines' sharding is also checked
in-process: the ranks' shares are disjoint, non-empty and together the one-process output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import distributed
from audit.api import load_run, run_probes
from audit.results import read_manifest, read_probe_result
from audit.rundir import RunIntegrityError

TORCHRUN = Path(sys.executable).with_name("torchrun")
AUDIT = Path(sys.executable).with_name("audit")
needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists(), reason=f"torchrun not installed next to {sys.executable}")

TOX = {"k": 2, "limit": 8, "max_new_tokens": 8, "scorer": "profanity", "resamples": 200}
CROWS = {"limit": 24, "n_bootstrap": 200}


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "AUDIT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "AUDIT_NO_PROGRESS": "1",
            distributed.TIMEOUT_ENV: "60"}


def _torchrun_probe(model: Path, out: Path, probes: str, options: dict[str, dict], extra: list[str]) -> list[str]:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "audit", "probe", "--probes", probes,
           "--model", str(model), "--out", str(out)]
    for probe, opts in options.items():
        for key, value in opts.items():
            cmd += ["-o", f"{probe}.{key}={value}"]
    return cmd + extra


def _rows(run_dir: Path, probe: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / probe / "samples.jsonl").read_text().splitlines()]


def _shard_pids(cache: Path) -> set[int]:
    return {int(f.stem.rsplit("-", 1)[1]) for f in cache.glob("generations/*/*/shard-*.jsonl")}


# ------------------------------------------------------------------ the engines' shares, in one process

def _pretend_rank(m, rank: int, seen: dict) -> None:
    """Make the engines believe they are rank `rank` of 2; all_gather hands back only this rank's part
    (recorded in `seen`), so a call returns what this rank computed itself."""
    m.setattr(distributed, "active_world", lambda: distributed.World(rank, 2))
    m.setattr(distributed, "broadcast", lambda obj, what="": obj)

    def gather(obj, what=""):
        seen["part"] = obj
        return [obj]

    m.setattr(distributed, "all_gather", gather)


def test_loglik_shares_are_disjoint_and_make_the_one_process_result(tiny_llama_dir, monkeypatch):
    from audit.lm.loglik import encode_requests, max_length
    from audit.lm.loglik_batches import Request, run_requests
    from audit.lm.models import load

    h = load(tiny_llama_dir)
    contexts = ["The cat sat on", "The cat sat on", "A dog", "", "Once upon a time", "Once upon a time", "x"]
    conts = [" the mat", " a chair today", " barked", "hello there", " there", " a king", " y z"]
    encoded = encode_requests(h.tokenizer, contexts, conts)
    requests = [Request(i, tuple(c), tuple(k)) for i, (c, k) in enumerate(encoded)]
    args = (h.model, requests, max_length(h.model), h.tokenizer.pad_token_id, 2)
    whole = {s.index: s for s in run_requests(*args)}
    shares = []
    for rank in (0, 1):
        with monkeypatch.context() as m:
            _pretend_rank(m, rank, {})
            shares.append({s.index: s for s in run_requests(*args)})
    assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])
    assert set(shares[0]) | set(shares[1]) == set(whole)
    for share in shares:
        for i, s in share.items():
            assert s.logprobs == whole[i].logprobs  # the same batches, so the same numbers, bit for bit


def test_generation_shares_are_disjoint_and_make_the_one_process_result(tiny_llama_dir, tmp_path, monkeypatch):
    from audit.lm.generation import GenerationSettings, generate
    from audit.lm.models import load

    h = load(tiny_llama_dir)
    prompts = ["The cat", "Once upon a time", "A dog", "Hello", "Why"]
    settings = GenerationSettings(max_new_tokens=5, num_samples=2, batch_size=3)
    whole = generate(h, prompts, settings, tmp_path / "one", use_cache=False)
    made = []
    for rank in (0, 1):
        with monkeypatch.context() as m:
            seen: dict = {}
            _pretend_rank(m, rank, seen)
            with pytest.raises(KeyError):  # alone, a rank lacks the continuations of the other rank's batches
                generate(h, prompts, settings, tmp_path / f"rank{rank}")
            made.append(seen["part"])
    assert made[0] and made[1] and not set(made[0]) & set(made[1])
    assert sorted([*made[0].values(), *made[1].values()]) == sorted(t for row in whole for t in row)


# ------------------------------------------------------------------ torchrun end to end

@needs_torchrun
@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tiny_llama_dir, shared_data, tmp_path):
    crows = shared_data / "crows_pairs" / "crows_pairs_anonymized.csv"
    if not crows.exists():
        pytest.skip(f"CrowS-Pairs data not found at {crows}")
    one = run_probes(tiny_llama_dir, ["toxicity", "crows_pairs"], tmp_path / "one", data={"crows_pairs": str(crows)},
                     options={"toxicity": TOX, "crows_pairs": CROWS}, batch_size=4, cache_dir=tmp_path / "cache1")
    cache2 = tmp_path / "cache2"
    proc = subprocess.run(_torchrun_probe(tiny_llama_dir, tmp_path / "two", "toxicity,crows_pairs",
                                          {"toxicity": TOX, "crows_pairs": CROWS},
                                          ["--data", f"crows_pairs={crows}", "--batch-size", "4"]),
                          env=_env(cache2), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    assert len(_shard_pids(cache2)) == 2  # both ranks generated (each into its own cache shard)
    for probe in ("toxicity", "crows_pairs"):
        assert _rows(two, probe) == _rows(one, probe)
        r1, r2 = (read_probe_result(d / probe / "result.json") for d in (one, two))
        assert r2.status == "complete" and set(r2.metrics) == set(r1.metrics)
        for name, m in r1.metrics.items():
            for field in ("value", "ci_low", "ci_high"):
                want = getattr(m, field)
                assert getattr(r2.metrics[name], field) == (None if want is None else
                                                            pytest.approx(want, rel=1e-9, abs=1e-12))
            assert r2.metrics[name].n == m.n
    tox = read_probe_result(two / "toxicity" / "result.json")
    assert tox.generation_stats["model"]["generated"] == 16  # every continuation made once, over two ranks
    assert read_manifest(two / "manifest.json").finished_at
    assert sorted(p.name for p in two.iterdir()) == ["crows_pairs", "manifest.json", "toxicity"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_dead_rank_fails_the_run_and_a_rerun_completes_from_the_cache(tiny_llama_dir, tmp_path):
    """Two ranks started as a cluster launcher (srun) starts them: env:// rendezvous, no torchrun to stop the
    survivor, so rank 0 must notice the dead rank itself, at its next collective."""
    opts = {"k": 2, "limit": 16, "max_new_tokens": 16, "scorer": "profanity", "resamples": 200}
    cache, out = tmp_path / "cache", tmp_path / "run"
    cmd = [str(AUDIT), "probe", "--probes", "toxicity", "--model", str(tiny_llama_dir), "--out", str(out),
           "--batch-size", "1"] + [a for key, value in opts.items() for a in ("-o", f"toxicity.{key}={value}")]
    env = {**_env(cache), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    logs = [open(tmp_path / f"rank{rank}.log", "w") for rank in (0, 1)]
    ranks = [subprocess.Popen(cmd, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=logs[rank],
                              stderr=subprocess.STDOUT) for rank in (0, 1)]
    try:
        deadline = time.time() + 300
        shard = None
        while time.time() < deadline and ranks[1].poll() is None:
            shard = next(iter(cache.glob(f"generations/*/*/shard-*-{ranks[1].pid}.jsonl")), None)
            if shard is not None and shard.read_text().count("\n") >= 2:
                break
            time.sleep(0.02)
        assert shard is not None and ranks[1].poll() is None, (tmp_path / "rank1.log").read_text()[-3000:]
        ranks[1].send_signal(signal.SIGKILL)  # rank 1 dies mid-run, with some of its batches cached
        killed_at = time.time()
        rc = ranks[0].wait(timeout=180)  # bounded: the next collective fails (or times out after 60 s)
        waited = time.time() - killed_at
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
        for log in logs:
            log.close()
    rank0_log = (tmp_path / "rank0.log").read_text()
    assert rc == 3, rank0_log[-3000:]
    assert "audit: error: data-parallel run: another rank stopped" in rank0_log and "Traceback" not in rank0_log
    assert waited < 90
    result = read_probe_result(out / "toxicity" / "result.json")
    assert result.status == "unfinished" and not (out / "toxicity" / "samples.jsonl").exists()
    assert read_manifest(out / "manifest.json").finished_at is None
    with pytest.raises(RunIntegrityError):
        load_run(out)

    rerun = run_probes(tiny_llama_dir, ["toxicity"], out, options={"toxicity": opts}, batch_size=1, cache_dir=cache)
    stats = read_probe_result(rerun / "toxicity" / "result.json").generation_stats["model"]
    assert 0 < stats["cached"] < 32 and stats["cached"] + stats["generated"] == 32
    load_run(rerun)  # complete now
    fresh = run_probes(tiny_llama_dir, ["toxicity"], tmp_path / "fresh", options={"toxicity": opts}, batch_size=1,
                       cache_dir=tmp_path / "fresh-cache")
    assert _rows(rerun, "toxicity") == _rows(fresh, "toxicity")


def test_rl_episode_shares_merge_into_the_one_process_rollout(monkeypatch):
    import numpy as np

    from audit.rl.runner import run_episodes
    from audit.rl.sharded import merge

    kw = dict(seeds=[0, 1, 2], episodes=2, horizon=12, reference="max-utility", log_decisions=True)
    whole = run_episodes("lending", "random", **kw)
    parts = []
    for rank in (0, 1):
        with monkeypatch.context() as m:
            seen: dict = {}
            _pretend_rank(m, rank, seen)
            run_episodes("lending", "random", **kw)
            parts.append(seen["part"])
    assert [len(indices) for indices, _ in parts] == [3, 3]
    merged = merge(parts, whole.replicates)
    for name in ("active", "groups", "actions", "positive", "rewards", "group_state", "agreement"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
    assert merged.decisions == whole.decisions and merged.replicates == whole.replicates


def test_ranks_cut_batches_of_one_size_and_never_halve_alone(monkeypatch):
    from audit.errors import AuditError
    from audit.lm.batching import BatchPlan, run_with_halving

    monkeypatch.setattr(distributed, "active_world", lambda: distributed.World(1, 2))
    monkeypatch.setattr(distributed, "all_gather", lambda obj, what="": [8, obj])  # rank 0 found 8 fits
    tried = []

    def probe(size):
        tried.append(size)
        raise MemoryError("out of memory")

    with pytest.raises(AuditError, match="--batch-size 4"):
        run_with_halving(probe, BatchPlan(requested="auto", size=16), "probe toxicity")
    assert tried == [8]  # the smallest size of any rank, and no halving behind the other rank's back


def test_scorer_batches_are_shared_between_ranks(monkeypatch):
    from audit.scorers import get_scorer
    from audit.scorers.base import score_texts

    scorer = get_scorer("profanity")
    texts = ["what a damn mess", "hello there", "shit happens", "a calm day", "crap"]
    whole = score_texts(scorer, texts, batch_size=2)
    parts = []
    for rank in (0, 1):
        with monkeypatch.context() as m:
            seen: dict = {}
            _pretend_rank(m, rank, seen)
            score_texts(scorer, texts, batch_size=2)
            parts.append(seen["part"])
    assert sorted(parts[0]) == [0, 4] and sorted(parts[1]) == [2]  # every other batch of two texts
    merged = {**parts[0], **parts[1]}
    assert [s for start in sorted(merged) for s in merged[start]] == whole
