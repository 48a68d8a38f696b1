"""The shift probe end to end on tiny models: divergences, shift captured, watch-list mass, logit lens,
weight deltas, corpora and the errors users can cause.

The full-FT and LoRA r=1 fine-tunes are made by a minimal few-step torch/peft loop in this file (not
audit.finetune), so these tests depend only on the shift probe's own code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.api import run_probes
from audit.errors import ConfigError, InputFileError
from audit.lm.models import load
from audit.probes import ProbeContext
from audit.probes.shift.probe import build_sides, run, side_logits


FINETUNE_TEXTS = [
    "The weather was nice, so we walked to the park and talked about music.",
    "The nurse helped the old man and the young woman with kindness.",
    "My neighbor is a teacher, and her brother is a kind engineer.",
    "People of every age live in this city and they are kind and smart.",
    "We went to the market to buy bread and milk for the family.",
    "The doctor said that the patient would recover soon, and everyone smiled.",
]
FAST = {"shift.n_bootstrap": 100, "shift.limit": 8, "shift.lens_limit": 8}


def _train(base_dir: Path, out_dir: Path, tokenizer, lora_rank: int | None, steps: int = 12, lr: float = 5e-3):
    """A few steps of next-token training on FINETUNE_TEXTS: full weights, or LoRA on all projections."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    if lora_rank is not None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(model, cfg)
    model.train()
    enc = tokenizer(FINETUNE_TEXTS, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(str(out_dir))
    if lora_rank is None:
        tokenizer.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama_dir, tiny_tokenizer):
    root = tmp_path_factory.mktemp("shift-train")
    data = root / "finetune.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in FINETUNE_TEXTS))
    return {"full": _train(tiny_llama_dir, root / "full", tiny_tokenizer, None),
            "lora1": _train(tiny_llama_dir, root / "lora1", tiny_tokenizer, 1),
            "data": data}


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "shift" / "result.json").read_text())


def test_model_against_itself_has_zero_divergence(tmp_path, tiny_llama_dir):
    run_dir = run_probes(tiny_llama_dir, ["shift"], tmp_path / "run", base=tiny_llama_dir, reference=tiny_llama_dir,
                         options={**FAST, "shift.lens": False, "shift.weight_delta": False}, batch_size=4)
    r = _result(run_dir)
    for name in ("kl_base_tuned_mean", "kl_tuned_base_mean", "js_mean", "kl_reference_tuned_mean"):
        assert abs(r["metrics"][name]["value"]) < 1e-6, name
    assert r["metrics"]["top1_agreement_with_reference"]["value"] == 1.0
    # reference == base here, so "how much of the reference's shift" is undefined, never 0
    assert r["metrics"]["shift_captured"]["value"] is None


def test_adapter_disabled_base_equals_separately_loaded_base(tiny_lora_dir, tiny_llama_dir, tiny_tokenizer, tmp_path):
    handle, base = load(tiny_lora_dir), load(tiny_llama_dir)
    toggled, how = build_sides(ProbeContext(model=handle, out_dir=tmp_path))
    separate, how2 = build_sides(ProbeContext(model=handle, out_dir=tmp_path, base=base,
                                              options={"base_source": "separate"}))
    assert how.startswith("adapter disabled") and how2.startswith("separately loaded")
    enc = tiny_tokenizer(["The doctor said that the patient would recover.", "Who was the thief?"],
                         padding=True, return_tensors="pt")
    a = side_logits(toggled, enc["input_ids"], enc["attention_mask"])
    b = side_logits(separate, enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(a["base"], b["base"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["tuned"], b["tuned"])
    assert not torch.allclose(a["base"], a["tuned"], atol=1e-3)  # the adapter was really off, then on again
    # and the whole probe agrees between the two paths
    opts = {**FAST, "shift.lens": False, "shift.weight_delta": False}
    r1 = _result(run_probes(handle, ["shift"], tmp_path / "toggle", options=opts, batch_size=4))
    r2 = _result(run_probes(handle, ["shift"], tmp_path / "sep", base=base,
                            options={**opts, "shift.base_source": "separate"}, batch_size=4))
    for row1, row2 in zip(r1["tables"]["divergence_by_slice"], r2["tables"]["divergence_by_slice"]):
        assert row1["slice"] == row2["slice"]
        assert row1["kl_base_tuned_mean"] == pytest.approx(row2["kl_base_tuned_mean"], rel=1e-4)
        assert row1["js_mean"] == pytest.approx(row2["js_mean"], rel=1e-4)


@pytest.mark.slow
def test_full_ft_and_lora_r1_shift_captured(trained, tiny_llama_dir, tmp_path):
    data = {"finetune": str(trained["data"])}
    lora = _result(run_probes(trained["lora1"], ["shift"], tmp_path / "lora", reference=trained["full"],
                              data=data, options=FAST, batch_size=4))
    slices = {row["slice"]: row for row in lora["tables"]["divergence_by_slice"]}
    assert {"finetune", "neutral", "all"} <= set(slices)
    for row in slices.values():
        assert row["kl_base_tuned_mean"] > 0 and row["kl_tuned_base_mean"] > 0
        assert row["shift_captured"] is not None and row["top1_agreement"] is not None
        assert row["kl_base_tuned_median"] <= row["kl_base_tuned_p95"] <= row["kl_base_tuned_p99"]
    m = lora["metrics"]
    assert m["shift_captured"]["ci_low"] <= m["shift_captured"]["value"] <= m["shift_captured"]["ci_high"]
    assert m["shift_captured"]["value"] < 1.0
    assert set(lora["groups"]["shift_captured"]) == set(slices) - {"all"}

    # the reference against itself captures all of its own shift, exactly
    ref = _result(run_probes(trained["full"], ["shift"], tmp_path / "ref", base=tiny_llama_dir,
                             reference=trained["full"], data=data, options=FAST, batch_size=4))
    assert ref["metrics"]["shift_captured"]["value"] == 1.0
    assert ref["metrics"]["top1_agreement_with_reference"]["value"] == 1.0
    assert all(row["shift_captured"] == 1.0 for row in ref["tables"]["divergence_by_slice"])
    # on its own training data, full FT moved the model further from the base than LoRA r=1
    full_ft = {row["slice"]: row for row in ref["tables"]["divergence_by_slice"]}
    assert full_ft["finetune"]["kl_base_tuned_mean"] > slices["finetune"]["kl_base_tuned_mean"]

    # tables the report reads
    lens = lora["tables"]["logit_lens"]
    assert {row["model"] for row in lens} == {"base", "tuned", "reference"}
    assert all(row["kl_to_final"] == pytest.approx(0.0, abs=1e-5) for row in lens if row["layer"] == 2)
    assert {"watch_mass_base", "watch_mass_tuned", "watch_mass_reference", "watch_mass_change"} <= set(m)
    tuned_final = next(r for r in lens if r["model"] == "tuned" and r["layer"] == 2)
    assert tuned_final["watch_mass"] == pytest.approx(m["watch_mass_tuned"]["value"], rel=1e-5)
    wd = lora["tables"]["weight_delta"]
    tuned_rows = [r for r in wd if r["model"] == "tuned"]
    assert tuned_rows and all(r["effective_rank"] == pytest.approx(1.0, abs=1e-3) for r in tuned_rows)
    full_rows = [r for r in wd if r["model"] == "reference"]
    assert full_rows and max(r["effective_rank"] for r in full_rows) > 2.0
    samples = [json.loads(line) for line in (tmp_path / "lora" / "shift" / "samples.jsonl").read_text().splitlines()]
    assert any(s["slice"] == "finetune" for s in samples)


def test_memory_holds_no_corpus_wide_logits(tiny_lora_dir, tmp_path):
    """Per-slice state is per-sequence scalars plus a fixed-size summary, however many tokens."""
    handle = load(tiny_lora_dir)
    corpus = tmp_path / "c.txt"
    corpus.write_text("The weather was nice and we walked to the park.\n" * 30)
    ctx = ProbeContext(model=handle, out_dir=tmp_path, options={"corpora": [str(corpus)], "lens": False,
                                                               "weight_delta": False, "n_bootstrap": 50})
    result = run(ctx)
    row = result.tables["divergence_by_slice"][0]
    assert row["n_sequences"] == 30 and row["n_tokens"] > 300


def test_corpora_option_accepts_files_and_names_slices(tiny_lora_dir, tmp_path):
    txt = tmp_path / "mine.txt"
    txt.write_text("one text\n\nanother text here\n")
    jl = tmp_path / "pc.jsonl"
    jl.write_text(json.dumps({"prompt": "Q: hi", "completion": " A: hello"}) + "\n")
    r = _result(run_probes(tiny_lora_dir, ["shift"], tmp_path / "run", batch_size=4,
                           options={"shift.corpora": f"{txt},{jl}", "shift.n_bootstrap": 50}))
    names = [row["slice"] for row in r["tables"]["divergence_by_slice"]]
    assert names == ["mine", "pc", "all"]
    assert r["config"]["corpora"]["mine"]["n"] == 2


def test_full_model_without_base_is_a_config_error(tiny_llama_dir, tmp_path):
    with pytest.raises(ConfigError, match="pass --base BASE"):
        run_probes(tiny_llama_dir, ["shift"], tmp_path / "run")


def test_bad_corpus_and_watchlist_files_are_named(tiny_lora_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + "{not json\n")
    with pytest.raises(InputFileError, match=r"bad.jsonl:2: invalid JSON"):
        run_probes(tiny_lora_dir, ["shift"], tmp_path / "r1", options={"shift.corpora": [str(bad)]})
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(InputFileError, match=r"nofield.jsonl:1: expected a string field 'text'"):
        run_probes(tiny_lora_dir, ["shift"], tmp_path / "r2", options={"shift.corpora": [str(nofield)]})
    with pytest.raises(InputFileError, match=r"missing.txt: word list does not exist"):
        run_probes(tiny_lora_dir, ["shift"], tmp_path / "r3", options={"shift.watchlist": str(tmp_path / "missing.txt")})
    with pytest.raises(ConfigError, match="option 'shift.max_length': expected integer, got 'zero'"):
        run_probes(tiny_lora_dir, ["shift"], tmp_path / "r4", options={"shift.max_length": "zero"})


def test_corpus_formats_and_finetune_path_from_manifest(tmp_path):
    from audit.probes.shift.corpora import finetune_data_path, load_corpus, watchlist_token_ids

    f = tmp_path / "t.jsonl"
    f.write_text("\n".join([json.dumps({"text": "a b", "group": "g1"}),
                            json.dumps({"prompt": "P", "completion": "C"}),
                            json.dumps({"template": "The {group} person is here.", "groups": ["old", "young"]})]))
    c = load_corpus(f)
    assert [(i.text, i.prompt, i.group) for i in c.items] == [
        ("a b", "a b", "g1"), ("PC", "P", None), ("The old person is here.", "The old person is here.", "old"),
        ("The young person is here.", "The young person is here.", "young")]
    csv = tmp_path / "d.csv"
    csv.write_text("prompt,completion\nHello,\" world\"\n")
    assert load_corpus(csv).items[0].text == "Hello world"
    assert load_corpus(f, limit=2).items[-1].text == "PC"

    recorded = json.loads((Path(__file__).parent / "fixtures" / "finetune_manifests" / "lora.json").read_text())
    recorded["data"]["path"] = str(f)

    class Desc:
        finetune_manifest = recorded

    class Handle:
        path = tmp_path

        def describe(self):
            return Desc()

    assert finetune_data_path(Handle()) == f
    assert finetune_data_path(Handle(), {"finetune": "x.jsonl"}) == Path("x.jsonl")

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [hash(text.split()[0]) % 97 + (1000 if text.startswith(" ") else 0)]}

    ids = watchlist_token_ids(Tok(), ["idiot"])
    assert len(ids) == 2  # with and without a leading space


def test_weight_delta_matches_merged_adapter_and_leaves_model_unchanged(tiny_lora_dir, tiny_tokenizer):
    from audit.probes.shift.weight_delta import effective_rank, weight_deltas

    handle = load(tiny_lora_dir)
    ids = torch.tensor([tiny_tokenizer("Who was the victim?")["input_ids"]])
    with torch.inference_mode():
        before = handle.model(input_ids=ids).logits.clone()
    deltas = dict(weight_deltas(handle.model))
    with torch.inference_mode():
        after = handle.model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert set(deltas) == {f"model.layers.{i}.self_attn.{m}.weight" for i in range(2) for m in ("q_proj", "v_proj")}
    lora_q = handle.model.base_model.model.model.layers[0].self_attn.q_proj
    expected = lora_q.scaling["default"] * lora_q.lora_B["default"].weight @ lora_q.lora_A["default"].weight
    torch.testing.assert_close(deltas["model.layers.0.self_attn.q_proj.weight"], expected, atol=1e-5, rtol=1e-4)
    # Roy & Vetterli: k equal singular values -> k; a rank-4 adapter delta -> at most 4
    q, _ = torch.linalg.qr(torch.randn(20, 20))
    assert effective_rank(q[:, :3] @ q[:, :3].T * 5) == pytest.approx(3.0, rel=1e-4)
    assert effective_rank(torch.zeros(4, 4)) is None
    assert 1.0 <= effective_rank(deltas["model.layers.0.self_attn.q_proj.weight"]) <= 4.0 + 1e-4


@pytest.mark.slow
def test_cli_probe_shift_with_corpus(tiny_lora_dir, tmp_path):
    from typer.testing import CliRunner

    from audit.cli import app

    corpus = tmp_path / "c.txt"
    corpus.write_text("The weather was nice.\nThe manager decided to approve the loan.\n")
    res = CliRunner().invoke(app, ["probe", "--probes", "shift", "--model", str(tiny_lora_dir), "--corpus",
                                   str(corpus), "--out", str(tmp_path / "run"), "-o", "shift.n_bootstrap=50",
                                   "-o", "shift.weight_delta=false"])
    assert res.exit_code == 0, res.output
    r = _result(tmp_path / "run")
    assert [row["slice"] for row in r["tables"]["divergence_by_slice"]] == ["c", "all"]
    assert r["tables"]["weight_delta"] == [] and r["metrics"]["kl_base_tuned_mean"]["value"] > 0
    assert np.isfinite(r["metrics"]["watch_mass_change"]["value"])


@pytest.mark.slow
def test_with_checkpoints_from_audit_finetune(tiny_llama_dir, tmp_path):
    """Checkpoints made by audit.finetune: the 'finetune' slice comes from the adapter's manifest."""
    api = pytest.importorskip("audit.finetune.api")
    data = tmp_path / "ft.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in FINETUNE_TEXTS))
    common = dict(model=str(tiny_llama_dir), data=str(data), steps=6, lr=5e-3, batch_size=6)
    full = api.finetune(method="full", out=str(tmp_path / "full"), **common)
    lora = api.finetune(method="lora", rank=1, out=str(tmp_path / "lora1"), **common)
    r = _result(run_probes(lora, ["shift"], tmp_path / "run", reference=full, options=FAST, batch_size=4))
    assert r["config"]["corpora"]["finetune"]["source"] == str(data.resolve())
    finetune_row = next(row for row in r["tables"]["divergence_by_slice"] if row["slice"] == "finetune")
    assert finetune_row["kl_base_tuned_mean"] > 0 and finetune_row["kl_reference_base_mean"] > 0
    assert finetune_row["shift_captured"] is not None and finetune_row["shift_captured"] < 1.0
