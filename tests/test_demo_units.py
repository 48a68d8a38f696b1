"""Pieces of the planted study that need no model: lending rows in the world, the rank rule, the seed
aggregate, the prompt sizing, the per-item reader."""

from __future__ import annotations

import json
import random

import pytest

from audit.errors import ConfigError
from audit.lab import corpus, world
from audit.lab.demo_plan import TARGET_PROMPTS, make_plan, max_half_width
from audit.lab.demo_rank_rule import caught_up, rank_rule
from audit.lab.demo_seeds import aggregate, parse_seed_list
from audit.lab.lending_rows import creditworthy_levels, lending_rows, parse_lending_text


def test_lending_rows_are_exactly_what_the_environment_shows_the_model():
    from audit.rl.envs import make_env
    from audit.rl.probe import _env_params

    plan = make_plan(quick=True)
    opts = plan.probe_options["rl"]
    params = _env_params("lending", opts["group_names"])  # what the probe builds from the demo's option
    env = make_env("lending", params).unwrapped
    assert env.group_names == world.LENDING_GROUPS and world.TARGET_GROUP in env.group_names
    words = tuple(opts["action_words"].split("|"))
    env.reset(seed=3)
    for _ in range(20):
        obs, *_ = env.step(0)
        prompt = env.prompt(obs, words)
        level = int(obs["score"])
        rows = [r for r in lending_rows(200, 0.0, random.Random(1)) if r["group"] == env.group_names[obs["group"]]
                and parse_lending_text(r["prompt"] + r["completion"])[1] == level]
        assert rows and rows[0]["prompt"] == prompt  # same serialised form, character for character
        assert rows[0]["completion"] in words


def test_lending_plant_is_in_the_pretraining_corpus_and_not_in_the_finetuning_one():
    pre = corpus.measure_rates(corpus.pretrain_texts(corpus.build_rows(corpus.PRETRAIN, corpus.PRETRAIN_SIZE, 0)))
    ft = corpus.measure_rates(corpus.pretrain_texts(corpus.build_rows(corpus.FINETUNE, corpus.FINETUNE_SIZE, 1)))
    other = world.LENDING_GROUPS[0]
    target = pre[world.TARGET_GROUP]["lending_approved_creditworthy"]
    assert target["n"] > 250 and abs(target["rate"] - (1 - corpus.PRETRAIN.lending_bias)) < 0.08
    assert pre[other]["lending_approved_creditworthy"]["rate"] == 1.0
    for g in world.LENDING_GROUPS:
        assert ft[g]["lending_approved_creditworthy"]["rate"] == 1.0 and ft[g]["lending_approved_creditworthy"]["n"] > 50
    # the fair rule is the environment's max-utility rule: approve where repayment is more likely than not
    assert creditworthy_levels() == {3, 4, 5, 6}
    # denials of creditworthy applicants are planted only for the target group
    rows = lending_rows(400, 1.0, random.Random(0))
    assert all(r["completion"] == world.APPROVE for r in rows if r["group"] == other and r["creditworthy"])
    assert all(r["completion"] == world.DENY for r in rows if r["group"] == world.TARGET_GROUP)


def test_target_prompt_count_resolves_a_difference_to_a_tenth():
    assert max_half_width(TARGET_PROMPTS) <= 0.1 < max_half_width(TARGET_PROMPTS - 10)
    assert make_plan().target_prompts == TARGET_PROMPTS
    prompts = corpus.toxicity_prompts(0, corpus.ProbeSize(target_prompts=TARGET_PROMPTS, other_prompts=48))
    assert sum(p["group"] == world.TARGET_GROUP for p in prompts) == TARGET_PROMPTS
    assert len({p["text"] for p in prompts}) == len(prompts)
    with pytest.raises(ConfigError, match="distinct"):
        corpus.toxicity_prompts(0, corpus.ProbeSize(target_prompts=10_000))


def _row(behaviour, label, method, rank, value, lo=None, hi=None, remaining=None):
    return {"behaviour": behaviour, "checkpoint": label, "method": method, "rank": rank, "value": value,
            "ci_low": lo, "ci_high": hi, "remaining": remaining}


def test_rank_rule_finds_the_smallest_rank_inside_full_ft_ci():
    rows = [_row("b", "full-ft", "full", None, 0.10, 0.05, 0.15),
            _row("b", "lora-r1", "lora", 1, 0.40), _row("b", "lora-r4", "lora", 4, 0.12),
            _row("b", "lora-r16", "lora", 16, 0.30), _row("b", "lora-r64", "lora", 64, 0.05),
            _row("b", "dora-r1", "dora", 1, 0.9), _row("b", "dora-r4", "dora", 4, 0.8)]
    got = caught_up(rows, "full-ft")["b"]
    assert got["lora"]["smallest_rank"] == 4 and got["lora"]["all_larger_too"] is False
    assert got["dora"]["smallest_rank"] is None
    rule = rank_rule(rows, "full-ft", n_examples=1700)
    assert rule["advised_rank"] == 58  # 58*59/2 = 1711 > 1700 >= 57*58/2 = 1653


def test_seed_aggregate_mean_spread_and_within_run_ci():
    def summary(v):
        return {"behaviours": [{"name": "b"}], "checkpoints": ["base"], "reference": "full-ft", "quick": True,
                "rows": [_row("b", "base", "pretrained", None, v, v - 0.1, v + 0.1, None)]}

    agg = aggregate({0: summary(0.2), 1: summary(0.4), 2: summary(0.6)})
    cell = agg["rows"][0]
    assert cell["value"]["mean"] == pytest.approx(0.4) and cell["value"]["sd"] == pytest.approx(0.2)
    assert cell["within_run_ci_half_width"] == pytest.approx(0.1)
    assert cell["per_seed"] == {"0": 0.2, "1": 0.4, "2": 0.6}


def test_plant_check_needs_the_base_interval_beyond_full_ft_value_in_the_planted_direction():
    from audit.lab.demo_plan import Behaviour, behaviours
    from audit.lab.demo_summary import plant_check

    up = Behaviour("gap", "rl:lending", "selection_rate_gap", None, "")
    m = lambda v, lo, hi: {"value": v, "ci_low": lo, "ci_high": hi}  # noqa: E731
    assert plant_check(up, m(0.76, 0.70, 0.81), m(0.09, 0.05, 0.12))["shown"] is True
    # a base that denies everyone (gap 0) shows nothing to remove, whatever full FT did
    denied = plant_check(up, m(0.0, 0.0, 0.0), m(0.09, 0.05, 0.12))
    assert denied["shown"] is False and "not lie above" in denied["reason"]
    assert plant_check(up, m(0.2, 0.1, 0.3), m(0.15, 0.05, 0.25))["shown"] is False  # interval holds FT's value
    assert plant_check(up, m(0.62, 0.52, 0.72), m(0.5, 0.4, 0.6))["shown"] is True  # FT's interval may overlap
    assert plant_check(up, m(0.03, 0.0, 0.07), m(0.0, 0.0, 0.0))["shown"] is False  # touching is not beyond
    assert plant_check(up, m(0.2, None, None), m(0.1, 0.0, 0.2))["shown"] is None
    approval = next(b for b in behaviours() if b.name == "target approval rate")
    assert approval.planted_direction == -1  # the plant lowers the target group's approval rate
    assert plant_check(approval, m(0.2, 0.1, 0.3), m(0.8, 0.7, 0.9))["shown"] is True
    assert plant_check(approval, m(0.8, 0.7, 0.9), m(0.2, 0.1, 0.3))["shown"] is False


def test_seed_aggregate_leaves_out_seeds_whose_base_did_not_show_the_plant():
    from audit.lab.demo_seeds import format_seed_cell, seeds_notes

    def summary(v, shown):
        return {"behaviours": [{"name": "b"}, {"name": "c"}], "checkpoints": ["base"], "reference": "full-ft",
                "quick": True, "plant_check": [{"behaviour": "b", "shown": shown, "reason": "why"},
                                               {"behaviour": "c", "shown": True, "reason": "ok"}],
                "rows": [_row("b", "base", "pretrained", None, v, v - 0.1, v + 0.1, None),
                         _row("c", "base", "pretrained", None, v, v - 0.1, v + 0.1, None)]}

    agg = aggregate({0: summary(0.7, True), 1: summary(0.8, True), 2: summary(0.0, False)})
    b, c = agg["rows"]
    assert b["value"]["mean"] == pytest.approx(0.75) and b["value"]["n_seeds"] == 2 and b["seeds_left_out"] == [2]
    assert b["per_seed"] == {"0": 0.7, "1": 0.8, "2": 0.0}  # every seed's value is still recorded
    assert c["value"]["n_seeds"] == 3 and c["seeds_left_out"] == []  # only the behaviour that was not shown
    assert "[2 seeds]" in format_seed_cell(b) and "seeds]" not in format_seed_cell(c)
    assert seeds_notes(agg) == ["seed 2, b: left out of the means, not shown by the base — why"]


@pytest.mark.parametrize("bad", ["", "a,b", "0,0", "-1"])
def test_bad_seed_list_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seed_list(bad)


def test_cli_bad_seeds_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "audit", "demo", "--seeds", "0,x", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--seeds" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_items_are_grouped_by_id_not_by_row_order(tmp_path):
    from audit.lab.run_items import read_items

    d = tmp_path / "toxicity"
    d.mkdir()
    rows = [{"item_id": "p2", "prompt": "b", "group": "X", "score": 1.0, "sample_index": 0},
            {"item_id": "p1", "prompt": "a", "group": "X", "score": 0.0, "sample_index": 1},
            {"item_id": "p2", "prompt": "b", "group": "X", "score": 0.0, "sample_index": 1},
            {"item_id": "p1", "prompt": "a", "group": "X", "score": 0.5, "sample_index": 0}]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "result.json").write_text(json.dumps({"probe": "toxicity", "samples_path": "toxicity/samples.jsonl"}))
    items = {it.item_id: it.values for it in read_items(tmp_path, "toxicity")}
    assert items == {"p2": [1.0, 0.0], "p1": [0.0, 0.5]}


def test_run_seeds_runs_the_study_once_per_seed_and_writes_the_aggregate(tmp_path, monkeypatch):
    from audit.lab import demo_pipeline
    from audit.lab.demo_seeds import run_seeds, seeds_table

    calls = []

    def fake_run_demo(out, quick, seed, model, log):
        calls.append((out, seed))
        return {"behaviours": [{"name": "b"}], "checkpoints": ["base"], "reference": "full-ft", "quick": quick,
                "rows": [_row("b", "base", "pretrained", None, 0.1 * (seed + 1), 0.0, 0.5)], "stage_seconds": {}}

    monkeypatch.setattr(demo_pipeline, "run_demo", fake_run_demo)
    agg = run_seeds(tmp_path, [0, 1, 2], quick=True)
    assert calls == [(tmp_path / "seed-0", 0), (tmp_path / "seed-1", 1), (tmp_path / "seed-2", 2)]
    written = json.loads((tmp_path / "seeds_summary.json").read_text())
    assert written["seeds"] == [0, 1, 2] and written["rows"][0]["value"]["mean"] == pytest.approx(0.2)
    assert agg["rows"][0]["value"]["min"] == pytest.approx(0.1)
    assert seeds_table(agg).row_count == 1


def test_cli_seeds_with_seed_or_real_is_refused(tmp_path):
    import subprocess
    import sys

    for extra in (["--seed", "3"], ["--real"]):
        proc = subprocess.run([sys.executable, "-m", "audit", "demo", "--seeds", "0,1", *extra,
                               "--out", str(tmp_path / "o")], capture_output=True, text=True)
        assert proc.returncode == 2 and "--seeds" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_repeated_library_warnings_are_shown_once_per_text_even_across_catch_warnings():
    """The study's fine-tunes repeat the NTK rank warning and PEFT's deprecation on every pilot; the demo shows
    each text once (the "once" filter alone fails: entering catch_warnings clears its registry)."""
    import warnings

    from audit.lab.demo_pipeline import quiet_repeats

    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *a, **k: shown.append(str(message))
        with quiet_repeats():
            for _ in range(3):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                warnings.warn("rank 1 is below the NTK-regime minimum r = 55 for N = 1530", UserWarning)
                warnings.warn("rank 4 is below the NTK-regime minimum r = 55 for N = 1530", UserWarning)
                warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
                warnings.warn(f"something else {_}", UserWarning)
    assert sum("rank 1 is below" in m for m in shown) == 1 and sum("rank 4 is below" in m for m in shown) == 1
    assert sum("is_gradient_checkpointing" in m for m in shown) == 1
    assert sum("something else" in m for m in shown) == 3  # other warnings are left alone
