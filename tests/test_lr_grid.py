"""Learning rate per run from a grid by held-out loss (audit.finetune.lr_grid), and rsLoRA scaling
(alpha/sqrt(r)) checked against PEFT's own scaling."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.errors import ConfigError
from audit.finetune.lr_grid import choose, GridRun, mean_token_loss, parse_lr_grid, split_heldout
from quant_helpers import one_torch_thread, write_data  # noqa: F401 (autouse fixture)

AUDIT = str(Path(sys.executable).with_name("audit"))


def test_parse_lr_grid_sorts_dedupes_and_refuses_bad_values():
    assert parse_lr_grid("1e-3, 1e-4,3e-4,1e-3") == [1e-4, 3e-4, 1e-3]
    assert parse_lr_grid([3e-3, 1e-3]) == [1e-3, 3e-3]
    assert parse_lr_grid(None) is None
    for bad, msg in (("1e-3", "at least two"), ("1e-3,x", "'x' is not a number"), ("1e-3,-1", "not a positive"),
                     ("1e-3,nan", "not a positive")):
        with pytest.raises(ConfigError, match=msg):
            parse_lr_grid(bad)


def test_choose_takes_the_lowest_heldout_loss_and_skips_diverged_rates():
    runs = [GridRun(1e-4, 2.0, 3.0, 2.1, 5), GridRun(1e-3, 1.5, 3.0, 1.4, 5), GridRun(1e-2, math.inf, 3.0, None, 5)]
    assert choose(runs).lr == 1e-3
    assert choose([GridRun(1e-4, 1.0, None, None, 1), GridRun(1e-3, 1.0, None, None, 1)]).lr == 1e-4  # tie: smaller
    with pytest.raises(ConfigError, match="every rate of the grid diverged"):
        choose([GridRun(1e-2, math.inf, None, None, 1)])


def test_heldout_split_is_seeded_disjoint_and_complete(tiny_tokenizer, tmp_path):
    from audit.finetune.data import load_training_data

    data = load_training_data(write_data(tmp_path / "t.jsonl"), tiny_tokenizer, 64)
    train, held = split_heldout(data, 0.25, seed=3)
    assert len(held) == 4 and train.n_rows == 12 == len(train.examples) == len(train.texts)
    again_train, again_held = split_heldout(data, 0.25, seed=3)
    assert again_held == held and again_train.examples == train.examples
    other = split_heldout(data, 0.25, seed=4)[1]
    key = lambda exs: sorted(json.dumps(e, sort_keys=True) for e in exs)  # noqa: E731
    assert key(train.examples + held) == key(data.examples)  # every row is in exactly one part
    assert other != held or data.n_rows < 3


def test_mean_token_loss_is_the_token_weighted_mean_of_the_models_own_loss(tiny_tokenizer, tiny_gpt2_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from audit.finetune.data import collate, load_training_data

    data = load_training_data(write_data(tmp_path / "t.jsonl"), tiny_tokenizer, 64)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir)).eval()
    exs = data.examples[:5]
    pad = tiny_tokenizer.pad_token_id if tiny_tokenizer.pad_token_id is not None else 0
    total = n = 0.0
    with torch.no_grad():
        for e in exs:  # one row at a time: HF's own mean loss over that row's labelled tokens
            b = collate([e], pad)
            k = sum(1 for t in e["labels"][1:] if t != -100)
            total += float(model(**b).loss) * k
            n += k
    assert mean_token_loss(model, exs, pad, batch_size=2) == pytest.approx(total / n, rel=1e-5)


@pytest.mark.slow
def test_cli_lr_grid_records_grid_and_choice_in_the_manifest(tiny_gpt2_dir, tmp_path):
    data = write_data(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([AUDIT, "finetune", "--method", "lora", "--model", str(tiny_gpt2_dir), "--data", str(data),
                           "--out", str(out), "--rank", "2", "--steps", "4", "--batch-size", "4",
                           "--lr-grid", "1e-4,3e-3,3e-2", "--heldout-fraction", "0.25", "--lr-pilot-steps", "3",
                           "--rslora"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    sel = m["lr_selection"]
    assert sel["grid"] == [1e-4, 3e-3, 3e-2] and m["config"]["lr_grid"] == sel["grid"]
    losses = {r["lr"]: r["heldout_loss"] for r in sel["runs"]}
    assert set(losses) == set(sel["grid"]) and all(r["steps"] == 3 for r in sel["runs"])
    assert sel["chosen_lr"] == min(losses, key=losses.get) == m["config"]["lr"]
    assert len(set(losses.values())) == 3  # the rates trained different models
    assert sel["heldout_rows"] == 4 and sel["train_rows"] == 12 and m["data"]["rows"] == 12
    assert m["steps"] == 4 and sel["pilot_steps"] == 3 and sel["final_heldout_loss"] is not None
    assert m["config"]["use_rslora"] is True
    assert json.loads((out / "adapter_config.json").read_text())["use_rslora"] is True
    assert not (out / "lr-grid").exists()  # the grid runs are gone once the choice is recorded


def test_bad_grid_options_are_one_line_errors(tiny_gpt2_dir, tmp_path):
    data = write_data(tmp_path / "train.jsonl")
    for extra, msg in ((["--lr-grid", "1e-3"], "at least two distinct rates"),
                       (["--lr-grid", "1e-3,1e-2", "--heldout-fraction", "0.9"], "heldout_fraction 0.9"),
                       (["--method", "full", "--rslora"], "use_rslora True: expected false for full")):
        args = ["--method", "lora", *extra] if extra[0] != "--method" else extra
        proc = subprocess.run([AUDIT, "finetune", *args, "--model", str(tiny_gpt2_dir), "--data", str(data),
                               "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert msg in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "o" / "manifest.json").exists()


# ------------------------------------------------------------------ rsLoRA

@pytest.mark.parametrize("rank", [1, 4, 16])
@pytest.mark.parametrize("rslora", [False, True])
def test_scaling_matches_peft(tiny_gpt2_dir, rank, rslora):
    from transformers import AutoModelForCausalLM

    from audit.finetune.base import FinetuneConfig
    from audit.finetune.lora import attach_lora
    from audit.finetune.quantized_lora import lora_layers

    cfg = FinetuneConfig(method="lora", model=str(tiny_gpt2_dir), data="x", out="y", rank=rank, alpha=8.0,
                         use_rslora=rslora)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir)), cfg)
    expected = 8.0 / (math.sqrt(rank) if rslora else rank)
    assert cfg.lora_scaling == pytest.approx(expected, rel=1e-12)
    for layer in lora_layers(model).values():
        assert layer.scaling["default"] == pytest.approx(expected, rel=1e-12)


def test_rslora_keeps_a_quantized_init_exact(tiny_gpt2_dir, tmp_path):
    """LoftQ's init sets Q + scaling * B @ A to its target; with rsLoRA the factors absorb the other scaling,
    so the effective weights at step 0 are the same as without it."""
    import torch

    from audit.finetune.base import FinetuneConfig
    from audit.finetune.loftq import LoftQ
    from audit.finetune.quantized_lora import lora_layers

    effective = {}
    for rslora in (False, True):
        cfg = FinetuneConfig(method="loftq", model=str(tiny_gpt2_dir), data="x", out=str(tmp_path / "o"), rank=4,
                             quantizer="int", bits=3, group_size=32, use_rslora=rslora)
        torch.manual_seed(0)
        model = LoftQ().build(Path(tiny_gpt2_dir), cfg)
        w = {}
        for name, layer in lora_layers(model).items():
            s = layer.scaling["default"]
            assert s == pytest.approx(cfg.lora_scaling)
            delta = s * (layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
            w[name] = delta.detach().clone()
        effective[rslora] = w
    for name in effective[False]:
        assert torch.allclose(effective[False][name], effective[True][name], atol=1e-6), name
        assert effective[False][name].abs().max() > 0  # the init is not zero
