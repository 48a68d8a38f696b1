"""Fine-tuning big models: --dtype (weights), --mixed-precision, --gradient-checkpointing, --optimizer
adamw8bit, FSDP config checks. On CPU: bf16 runs track the float32 run, the choices land in the manifest,
and every bad combination is one line with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.finetune.api import finetune

AUDIT = Path(sys.executable).with_name("audit")
STEPS = 6


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    rows = [{"text": f"The nurse said {c} to the old man and the doctor said {c}{c} back."}
            for c in "abcdefghijklmnop"]
    f = tmp_path_factory.mktemp("precision-data") / "train.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return f


def _run(tmp_path, base, data, name, method="lora", **kw) -> dict:
    kw.setdefault("steps", STEPS)
    out = finetune(method=method, model=str(base), data=str(data), out=str(tmp_path / name),
                   lr=3e-3, rank=4, batch_size=4, seed=0, **kw)
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _losses(m: dict) -> list[float]:
    return [row["loss"] for row in m["loss_curve"]]


def test_lora_bf16_with_gradient_checkpointing_tracks_float32(tmp_path, tiny_llama_dir, train_file):
    ref = _run(tmp_path, tiny_llama_dir, train_file, "fp32")
    ckpt = _run(tmp_path, tiny_llama_dir, train_file, "fp32-gc", gradient_checkpointing=True)
    bf16 = _run(tmp_path, tiny_llama_dir, train_file, "bf16", dtype="bfloat16", mixed_precision="bf16",
                gradient_checkpointing=True)
    # recomputing activations changes nothing in float32 ...
    assert _losses(ckpt) == pytest.approx(_losses(ref), rel=1e-5, abs=1e-6)
    # ... and bf16 weights + autocast stay within bf16 rounding of the float32 curve, and still learn
    assert _losses(bf16) == pytest.approx(_losses(ref), rel=2e-2)
    assert _losses(bf16)[-1] < _losses(bf16)[0] - 0.05
    p = bf16["precision"]
    assert p["dtype"] == "bfloat16" and p["weight_dtype"] == "bfloat16" and p["mixed_precision"] == "bf16"
    assert p["gradient_checkpointing"] is True and ckpt["precision"]["gradient_checkpointing"] is True
    assert ref["precision"]["gradient_checkpointing"] is False
    assert "bfloat16" in p["frozen_dtypes"]  # the base is stored in bf16 ...
    assert set(p["trainable_dtypes"]) == {"float32"}  # ... PEFT keeps the adapter factors in float32
    assert bf16["config"]["dtype"] == "bfloat16" and bf16["config"]["gradient_checkpointing"] is True


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "dora", "qlora", "galore", "cloq", "loftq", "irqlora"])
def test_gradient_checkpointing_turns_on_and_changes_no_loss_for_every_method(tmp_path, tiny_llama_dir,
                                                                               train_file, method):
    """(LoRA is checked above.) Recomputing activations is exact in float32, whatever the method's layers."""
    plain = _run(tmp_path, tiny_llama_dir, train_file, "plain", method=method, steps=2)
    ckpt = _run(tmp_path, tiny_llama_dir, train_file, "ckpt", method=method, steps=2, gradient_checkpointing=True)
    assert ckpt["precision"]["gradient_checkpointing"] is True and plain["precision"]["gradient_checkpointing"] is False
    assert _losses(ckpt) == pytest.approx(_losses(plain), rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_full_ft_bf16_8bit_adam_through_the_cli(tmp_path, tiny_llama_dir, train_file):
    """The installed executable: pure-bf16 full FT with gradient checkpointing and bitsandbytes 8-bit AdamW."""
    out = tmp_path / "full-bf16"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIT_NO_PROGRESS": "1"}
    proc = subprocess.run([str(AUDIT), "finetune", "--method", "full", "--model", str(tiny_llama_dir),
                           "--data", str(train_file), "--out", str(out), "--steps", str(STEPS), "--lr", "3e-3",
                           "--batch-size", "4", "--dtype", "bfloat16", "--mixed-precision", "bf16",
                           "--gradient-checkpointing", "--optimizer", "adamw8bit", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    p = m["precision"]
    assert p["optimizer"] == "adamw8bit" and p["optimizer_class"] == "bitsandbytes.AdamW8bit"
    assert set(p["trainable_dtypes"]) == {"bfloat16"} and p["gradient_checkpointing"] is True
    assert m["config"]["optimizer"] == "adamw8bit" and m["config"]["mixed_precision"] == "bf16"
    losses = _losses(m)
    assert losses[-1] < losses[0] - 0.3
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"  # the checkpoint is saved in bf16


def test_8bit_state_is_smaller_than_float32_state(tmp_path, tiny_llama_dir, train_file):
    """bitsandbytes keeps one byte per moment for tensors of >= 4096 values (smaller ones stay float32)."""
    fp32 = _run(tmp_path, tiny_llama_dir, train_file, "adam", method="full")
    q8 = _run(tmp_path, tiny_llama_dir, train_file, "adam8", method="full", optimizer="adamw8bit")
    assert q8["optimizer_state_bytes"] < 0.45 * fp32["optimizer_state_bytes"]
    assert _losses(q8) == pytest.approx(_losses(fp32), rel=2e-2)


def test_resume_with_8bit_adam_continues_exactly(tmp_path, tiny_llama_dir, train_file):
    """bitsandbytes' 8-bit state goes through the training checkpoint (weights_only) and back unchanged."""
    kw = dict(method="full", optimizer="adamw8bit", save_every=2, steps=4)
    straight = _run(tmp_path, tiny_llama_dir, train_file, "straight", **kw)

    class Stop(Exception):
        pass

    def stop(step, loss):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        finetune(model=str(tiny_llama_dir), data=str(train_file), out=str(tmp_path / "cut"), lr=3e-3, rank=4,
                 batch_size=4, seed=0, on_step=stop, **kw)
    resumed = _run(tmp_path, tiny_llama_dir, train_file, "cut", resume=True, **kw)
    assert resumed["resumed_from_step"] == 2 and _losses(resumed) == _losses(straight)


BAD = [
    (["--mixed-precision", "fp16"], "--mixed-precision fp16: needs a CUDA GPU"),
    (["--dtype", "bfloat16", "--mixed-precision", "fp16"], "--dtype bfloat16 with --mixed-precision fp16"),
    (["--dtype", "float16", "--method", "full"], "--dtype float16 with --method full"),
    (["--optimizer", "adam9bit"], "optimizer 'adam9bit': expected one of adamw, adamw8bit, paged_adamw8bit"),
    (["--mixed-precision", "fp8"], "mixed_precision 'fp8': expected no, fp16 or bf16"),
    (["--dtype", "float8"], "--dtype float8: expected one of"),
    (["--method", "galore", "--optimizer", "adamw8bit"], "galore_torch) needs CUDA"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_combinations_are_one_line_exit_2(monkeypatch, capsys, tmp_path, args, message):
    from audit.cli import main

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    argv = ["audit", "finetune", "--method", "lora", "--model", str(tmp_path), "--data", "x.jsonl",
            "--out", str(tmp_path / "o"), *args]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_fsdp_refuses_what_it_cannot_shard(monkeypatch):
    from audit.errors import ConfigError

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    with pytest.raises(ConfigError, match="FSDP .* --method lora: FSDP is supported for full fine-tuning only"):
        finetune(method="lora", model="m", data="d", out="o")
    with pytest.raises(ConfigError, match="FSDP with --optimizer adamw8bit"):
        finetune(method="full", model="m", data="d", out="o", optimizer="adamw8bit")
    with pytest.raises(ConfigError, match="FSDP with --save-every"):
        finetune(method="full", model="m", data="d", out="o", save_every=5)


def test_8bit_optimizer_without_bitsandbytes_is_one_line(monkeypatch):
    from audit.errors import ConfigError

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"--optimizer adamw8bit: bitsandbytes is not installed; pip install"):
        finetune(method="lora", model="m", data="d", out="o", optimizer="adamw8bit")


def test_example_fsdp_config_parses_into_an_fsdp_plugin(monkeypatch):
    """What a CPU can check of examples/accelerate-fsdp.yaml (FSDP itself needs GPUs): `accelerate launch`'s
    own parser reads it, derives the environment it would give each process, and in that environment
    accelerate builds an FSDP2 plugin that shards Llama decoder layers, and our checks accept full FT with
    the config's mixed precision and refuse the rest."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    from audit.errors import ConfigError
    from audit.finetune.base import FinetuneConfig
    from audit.finetune.precision import check_scale_options, fsdp_active

    path = Path(__file__).resolve().parents[1] / "examples" / "accelerate-fsdp.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "audit", "finetune"])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.num_processes == 8
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    assert fsdp_active()
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    check_scale_options(FinetuneConfig(method="full", model="m", data="d", out="o", mixed_precision="bf16"))
    with pytest.raises(ConfigError, match="--mixed-precision no: the accelerate config asks for bf16"):
        check_scale_options(FinetuneConfig(method="full", model="m", data="d", out="o"))
