"""Memory stays flat: the generation cache index and the samples logs are streamed, not read whole."""

from __future__ import annotations

import json

from audit.lm.generation import GenerationCache, GenerationSettings


def test_cache_index_keeps_only_the_wanted_keys(tmp_path):
    cache = GenerationCache(tmp_path, "f" * 64, "test-engine", GenerationSettings())
    rows = [{"key": cache.key(f"prompt {i}", i, 0), "continuation": f"text {i}"} for i in range(200)]
    cache.append(rows)
    with open(next(cache.dir.glob("shard-*.jsonl")), "a", encoding="utf-8") as fh:
        fh.write('{"key": "torn line')  # a crash mid-write: ignored
    wanted = {rows[3]["key"], rows[150]["key"], "0" * 64}
    assert cache.load(wanted) == {rows[3]["key"]: "text 3", rows[150]["key"]: "text 150"}
    assert len(cache.load()) == 200


def test_report_examples_keep_the_top_scores_per_group_in_file_order_on_ties(tmp_path):
    from report_fixtures import make_run

    from audit.report.compare import load_runs
    from audit.report.context import toxicity_examples

    run_dir = make_run(tmp_path / "run", "run", "pretrained", seed=1)
    rows = [{"group": "g", "prompt": f"p{i}", "continuation": f"c{i}", "score": s}
            for i, s in enumerate([0.1, 0.9, 0.5, 0.9, 0.2, 0.7])]
    (run_dir / "toxicity" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = load_runs([run_dir])
    got = toxicity_examples([run], per_group=3)
    assert [e["continuation"] for e in got[0]["rows"]] == ["c1", "c3", "c5"]  # 0.9, 0.9 (file order), 0.7
