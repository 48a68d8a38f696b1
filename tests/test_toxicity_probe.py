"""The toxicity probe end to end on tiny models: results, samples, cache reuse, resumption, base comparison."""

from __future__ import annotations

import json

import pytest

from audit.api import run_probes
from audit.errors import AuditError, ConfigError, InputFileError
from audit.lm.generation import HFGenerator
from audit.results import read_probe_result

OPTS = {"toxicity": {"k": 2, "limit": 10, "max_new_tokens": 8, "n_bootstrap": 200}}


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from audit.lm.models import load

    return load(tiny_llama_dir)


def forward_counter(model):
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1

    return calls, model.register_forward_hook(hook)


def samples(run_dir, name="samples.jsonl"):
    return [json.loads(line) for line in (run_dir / "toxicity" / name).read_text().splitlines()]


def test_probe_writes_results_and_samples_then_serves_from_cache(llama, tmp_path):
    cache = tmp_path / "cache"
    calls, hook = forward_counter(llama.model)
    try:
        run1 = run_probes(llama, ["toxicity"], tmp_path / "run1", options=OPTS, batch_size=8, cache_dir=cache)
        first_forwards = calls["n"]
        calls["n"] = 0
        run2 = run_probes(llama, ["toxicity"], tmp_path / "run2", options=OPTS, batch_size=8, cache_dir=cache)
        second_forwards = calls["n"]
    finally:
        hook.remove()
    assert first_forwards > 0
    assert second_forwards == 0  # the second run did no generation at all
    r1, r2 = (read_probe_result(d / "toxicity" / "result.json") for d in (run1, run2))
    assert r1.generation_stats["model"]["generated"] == 20 and r2.generation_stats["model"]["cached"] == 20
    assert r2.generation_stats["model"]["generated"] == 0
    assert r1.metrics == r2.metrics
    for name in ("expected_max_toxicity", "toxicity_probability", "toxic_fraction", "mean_toxicity",
                 "degenerate_fraction", "n_degenerate"):
        assert name in r1.metrics
    emt = r1.metrics["expected_max_toxicity"]
    assert emt.n == 10 and emt.ci_low <= emt.value <= emt.ci_high
    from audit.scorers import get_scorer

    default = get_scorer()
    assert r1.scorer["name"] == default.name and r1.scorer["version"] == default.version
    assert r1.config["generation"]["num_samples"] == 2 and r1.n_samples == 20
    assert len(r1.groups["expected_max_toxicity"]) == 10  # limit=10 picks one prompt from each of 10 groups
    # ... of both prompt kinds (the first 10 rows of the file are all neutral): a stratified sample, recorded
    assert {row["category"] for row in r1.tables["by_category"]} == {"neutral", "provocative"}
    assert r1.sample["limit"] == 10 and r1.sample["n_items"] == 10 and r1.sample["n_available"] == 350
    assert r1.sample["strata"] == ["category", "group"] and "stratified" in r1.sample["strategy"]
    assert r1.options["k"] == 2 and r1.options["n_bootstrap"] == 200
    rows = samples(run1)
    assert len(rows) == 20 and r1.samples_path == "toxicity/samples.jsonl"
    for key in ("prompt", "group", "category", "sample_index", "continuation", "score"):
        assert key in rows[0]
    assert [r["sample_index"] for r in rows[:4]] == [0, 1, 0, 1]
    # the metrics are the RTP ones computed from the samples written
    import numpy as np

    m = np.array([r["score"] for r in rows]).reshape(10, 2)
    assert emt.value == pytest.approx(m.max(1).mean())
    assert r1.metrics["mean_toxicity"].value == pytest.approx(m.mean())


def test_rescoring_with_another_scorer_does_not_regenerate(llama, tmp_path):
    cache = tmp_path / "cache"
    run_probes(llama, ["toxicity"], tmp_path / "a", options=OPTS, batch_size=8, cache_dir=cache)
    first = samples(tmp_path / "a")
    words = [w for w in first[3]["continuation"].split() if "#" not in w]
    assert words, first[3]
    planted = words[0]
    lex = tmp_path / "lex.txt"
    lex.write_text(planted + "\n")
    calls, hook = forward_counter(llama.model)
    try:
        opts = {"toxicity": {**OPTS["toxicity"], "scorer": f"lexicon:{lex}"}}
        run_probes(llama, ["toxicity"], tmp_path / "b", options=opts, batch_size=8, cache_dir=cache)
    finally:
        hook.remove()
    assert calls["n"] == 0
    second = samples(tmp_path / "b")
    assert [r["continuation"] for r in second] == [r["continuation"] for r in first]
    assert read_probe_result(tmp_path / "b" / "toxicity" / "result.json").scorer["name"] == "lexicon"
    assert {r["score"] for r in second} <= {0.0, 1.0} and second[3]["score"] == 1.0


def test_killed_run_resumes_without_redoing_finished_batches(llama, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = HFGenerator.generate_batch
    seen = {"batches": 0, "rows": 0}

    def dies_after_two(self, prompts, seeds, settings):
        if seen["batches"] == 2:
            raise KeyboardInterrupt("killed")
        seen["batches"] += 1
        seen["rows"] += len(prompts)
        return real(self, prompts, seeds, settings)

    monkeypatch.setattr(HFGenerator, "generate_batch", dies_after_two)
    with pytest.raises(KeyboardInterrupt):  # 10 prompts x k=2 = 20 rows = 3 batches of 8
        run_probes(llama, ["toxicity"], tmp_path / "run", options=OPTS, batch_size=8, cache_dir=cache)
    assert seen == {"batches": 2, "rows": 16}
    # the killed probe is marked unfinished (never mistaken for a result) until the re-run completes it
    assert read_probe_result(tmp_path / "run" / "toxicity" / "result.json").status == "unfinished"

    def counting(self, prompts, seeds, settings):
        seen["batches"] += 1
        seen["rows"] += len(prompts)
        return real(self, prompts, seeds, settings)

    monkeypatch.setattr(HFGenerator, "generate_batch", counting)
    seen.update(batches=0, rows=0)
    run_probes(llama, ["toxicity"], tmp_path / "run", options=OPTS, batch_size=8, cache_dir=cache)
    assert seen == {"batches": 1, "rows": 4}  # only the unfinished batch
    seen.update(batches=0, rows=0)
    run_probes(llama, ["toxicity"], tmp_path / "fresh", options=OPTS, batch_size=8, cache_dir=tmp_path / "c2")
    assert seen["rows"] == 20
    resumed, fresh = samples(tmp_path / "run"), samples(tmp_path / "fresh")
    assert [r["continuation"] for r in resumed] == [r["continuation"] for r in fresh]


def test_adapter_reports_change_vs_base(tiny_llama_dir, tiny_lora_dir, tmp_path):
    from audit.lm.models import load

    handle = load(tiny_lora_dir)
    run = run_probes(handle, ["toxicity"], tmp_path / "run", options=OPTS, batch_size=16,
                     cache_dir=tmp_path / "cache")
    r = read_probe_result(run / "toxicity" / "result.json")
    for name in ("expected_max_toxicity", "toxicity_probability", "mean_toxicity"):
        base, change = r.metrics[f"base.{name}"], r.metrics[f"change_vs_base.{name}"]
        assert change.value == pytest.approx(r.metrics[name].value - base.value)
        assert change.ci_low <= change.value <= change.ci_high
        assert len(r.groups[f"change_vs_base.{name}"]) == 10
    assert r.generation_stats["base"]["generated"] == 20
    model_rows, base_rows = samples(run), samples(run, "base_samples.jsonl")
    assert [x["prompt"] for x in model_rows] == [x["prompt"] for x in base_rows]
    assert [x["continuation"] for x in model_rows] != [x["continuation"] for x in base_rows]  # adapter changes output
    # the adapter-disabled base (one copy in memory) generates what the base model generates on its own
    alone = run_probes(load(tiny_llama_dir), ["toxicity"], tmp_path / "alone", options=OPTS, batch_size=16,
                       cache_dir=tmp_path / "cache")
    assert [x["continuation"] for x in samples(alone)] == [x["continuation"] for x in base_rows]


def test_prompt_file_from_data_and_rtp_buckets(llama, tmp_path):
    f = tmp_path / "rtp.jsonl"
    f.write_text("".join(json.dumps({"prompt": {"text": t, "toxicity": tox}}) + "\n"
                         for t, tox in [("The doctor said", 0.1), ("The nurse", 0.8), ("My neighbor", 0.2)]))
    run = run_probes(llama, ["toxicity"], tmp_path / "run", data={"toxicity": str(f)},
                     options={"toxicity": {"k": 2, "max_new_tokens": 4}}, cache_dir=tmp_path / "c")
    r = read_probe_result(run / "toxicity" / "result.json")
    assert r.config["source"] == "rtp" and r.config["n_prompts"] == 3
    buckets = {row["bucket"] for row in r.tables["by_prompt_toxicity"]}
    assert buckets == {"prompt_toxicity<0.5", "prompt_toxicity>=0.5"}
    assert all("prompt_toxicity" in row for row in samples(run))


def test_greedy_reduces_k_with_a_warning(llama, tmp_path):
    run = run_probes(llama, ["toxicity"], tmp_path / "run", cache_dir=tmp_path / "c",
                     options={"toxicity": {"k": 5, "limit": 3, "max_new_tokens": 4, "temperature": 0}})
    r = read_probe_result(run / "toxicity" / "result.json")
    assert r.n_samples == 3 and any("k=5 was reduced to 1" in w for w in r.warnings)
    assert r.config["generation"]["do_sample"] is False
    # the old spelling do_sample=false still means greedy (deprecated), and gives the same continuations
    old = run_probes(llama, ["toxicity"], tmp_path / "old", cache_dir=tmp_path / "c",
                     options={"toxicity": {"k": 5, "limit": 3, "max_new_tokens": 4, "do_sample": "false"}})
    assert samples(old) == samples(run)
    old_warnings = read_probe_result(old / "toxicity" / "result.json").warnings
    assert any("'toxicity.do_sample' is deprecated" in w for w in old_warnings)


def test_bad_input_errors(llama, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputFileError, match="empty.jsonl: no prompts in this file"):
        run_probes(llama, ["toxicity"], tmp_path / "r1", options={"toxicity": {"prompts": str(empty)}},
                   cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="scorer 'nonsense': unknown scorer"):
        run_probes(llama, ["toxicity"], tmp_path / "r2", options={"toxicity": {"scorer": "nonsense", "limit": 2}},
                   cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="option 'toxicity.k': expected integer, got 'many'"):
        run_probes(llama, ["toxicity"], tmp_path / "r3", options={"toxicity": {"k": "many"}},
                   cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="option 'toxicity.n_bootstrap': 3; expected 0 .no intervals. or at least 10"):
        run_probes(llama, ["toxicity"], tmp_path / "r5", options={"toxicity": {"resamples": 3, "limit": 2}},
                   cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="option 'toxicity.k': 0; expected an integer >= 1"):
        run_probes(llama, ["toxicity"], tmp_path / "r4", options={"toxicity": {"k": 0}}, cache_dir=tmp_path / "c")


def test_degenerate_outputs_are_flagged(tmp_path):
    """A 'fine-tune' that emits nothing scores 0 toxicity; the probe must say its outputs are degenerate."""
    from audit.probes import ProbeContext
    from audit.probes.toxicity.probe import run

    class Silent:
        engine, fingerprint = "silent/1", "s" * 64

        def generate_batch(self, prompts, seeds, settings):
            return [""] * len(prompts)

    import audit.probes.toxicity.probe as probe_mod

    ctx = ProbeContext(model=Silent(), out_dir=tmp_path / "out", options={"k": 2, "limit": 5},
                       cache_dir=tmp_path / "c")
    r = run(ctx)
    assert r.metrics["mean_toxicity"].value < 0.5
    assert r.metrics["degenerate_fraction"].value == 1.0 and r.metrics["n_degenerate"].value == 10
    assert any("empty or highly repetitive" in w for w in r.warnings)
    assert probe_mod.DEGENERATE_WARN_FRACTION < 1


def test_cli_probe_toxicity(tiny_llama_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from audit.cli import app

    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))  # other tests generate the same prompts

    out = tmp_path / "run"
    args = ["probe", "--probes", "toxicity", "--model", str(tiny_llama_dir), "--out", str(out),
            "-o", "toxicity.k=2", "-o", "toxicity.limit=4", "-o", "toxicity.max_new_tokens=4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "toxicity" / "result.json").exists() and len(samples(out)) == 8
    assert "expected_max_toxicity" in res.output
    first = read_probe_result(out / "toxicity" / "result.json")
    assert first.generation_stats["model"]["generated"] == 8
    res = CliRunner().invoke(app, args)  # same settings again: everything from the run's cache
    assert res.exit_code == 0, res.output
    second = read_probe_result(out / "toxicity" / "result.json")
    assert second.generation_stats["model"] == {"cached": 8, "generated": 0, "batches": 0}
    assert second.metrics == first.metrics


def test_unknown_prompt_path_is_an_audit_error(llama, tmp_path):
    with pytest.raises(AuditError, match="missing.jsonl: prompt file not found"):
        run_probes(llama, ["toxicity"], tmp_path / "r", options={"toxicity": {"prompts": str(tmp_path / "missing.jsonl")}},
                   cache_dir=tmp_path / "c")
