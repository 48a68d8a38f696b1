"""Each of full / LoRA / DoRA / QLoRA / GaLore: trains (the loss drops), and its checkpoint reloads with
audit.lm.models.load, `audit info` and plain transformers/PEFT giving the logits the model had right after
training. DoRA is checked against its formula, GaLore's optimizer state against its low-rank shapes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

METHODS = ["full", "lora", "dora", "qlora", "galore"]
SENTENCES = ["The doctor said that the patient would recover soon.",
             "The nurse helped the old man and the young woman.",
             "My neighbor is a teacher, and her brother is an engineer.",
             "They went to the market to buy bread and milk."]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("ftdata") / "train.jsonl"
    f.write_text("\n".join(json.dumps({"text": s}) for s in SENTENCES * 3), encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def probe_batch(tiny_tokenizer):
    enc = tiny_tokenizer(["The doctor said that", "People of every religion"], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_file, probe_batch):
    """method (+ arch) -> (out dir, logits right after training, manifest); each trained once per module."""
    from audit.finetune.base import FinetuneConfig
    from audit.finetune.train import train_model
    from audit.lab.tiny import build_tiny_model, build_tokenizer

    cache: dict = {}
    bases: dict = {}

    def get(method: str, arch: str = "llama"):
        if (method, arch) not in cache:
            if arch not in bases:
                bases[arch] = build_tiny_model(tmp_path_factory.mktemp(f"base-{arch}"), arch=arch,
                                               tokenizer=build_tokenizer(), seed=0)
            out = tmp_path_factory.mktemp(f"ft-{method}-{arch}")
            cfg = FinetuneConfig(method=method, model=str(bases[arch]), data=str(train_file), out=str(out),
                                 rank=4, steps=8, lr=5e-3, batch_size=4, seed=0, galore_update_proj_gap=4,
                                 overwrite=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out, model = train_model(cfg)
            manifest = json.loads((out / "manifest.json").read_text())
            cache[(method, arch)] = (out, logits_of(model, probe_batch), manifest, bases[arch])
        return cache[(method, arch)]

    return get


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_the_loss(trained, method):
    _, _, manifest, _ = trained(method)
    curve = [row["loss"] for row in manifest["loss_curve"]]
    assert len(curve) == 8 == manifest["steps"]
    assert manifest["final_loss"] < manifest["initial_loss"] - 0.05, curve
    assert sum(curve[-2:]) < sum(curve[:2])


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_reloads_with_audit_load_and_same_logits(trained, probe_batch, method):
    from audit.lm.models import load

    out, after_training, manifest, base = trained(method)
    handle = load(out)
    assert handle.describe().method == method
    assert handle.is_adapter == (method in ("lora", "dora", "qlora"))
    if handle.is_adapter:
        assert handle.base_path.resolve() == base.resolve()
        assert handle.describe().rank == 4
    else:
        assert handle.describe().rank is None
    torch.testing.assert_close(logits_of(handle.model, probe_batch), after_training, atol=2e-5, rtol=1e-5)
    # and the checkpoint is not simply the base: training moved the logits
    base_logits = logits_of(load(base).model, probe_batch)
    assert (after_training - base_logits).abs().max() > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_reloads_with_plain_transformers_and_peft(trained, probe_batch, method):
    from transformers import AutoModelForCausalLM

    from audit.lm.models import _bnb_config

    out, after_training, manifest, base = trained(method)
    if method in ("full", "galore"):
        model = AutoModelForCausalLM.from_pretrained(str(out))
    else:
        from peft import PeftModel

        adapter_cfg = json.loads((out / "adapter_config.json").read_text())
        assert Path(adapter_cfg["base_model_name_or_path"]).is_absolute()
        assert adapter_cfg["use_dora"] == (method == "dora")
        assert sorted(adapter_cfg["target_modules"]) == sorted(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        kwargs = {"quantization_config": _bnb_config(torch.float32)} if method == "qlora" else {}
        base_model = AutoModelForCausalLM.from_pretrained(adapter_cfg["base_model_name_or_path"], **kwargs)
        model = PeftModel.from_pretrained(base_model, str(out))
    torch.testing.assert_close(logits_of(model, probe_batch), after_training, atol=2e-5, rtol=1e-5)


def test_qlora_records_the_quantized_base_and_reloads_in_4bit(trained):
    from audit.lm.models import load, weight_files

    out, _, manifest, base = trained("qlora")
    q = manifest["quantization"]
    assert (q["method"], q["quant_type"], q["double_quant"], q["bits"]) == ("bitsandbytes", "nf4", True, 4)
    assert q["base_weight_files"] == weight_files(base)
    handle = load(out)
    assert handle.load_options["load_in_4bit"] is True
    assert any(type(m).__name__ == "Linear4bit" for m in handle.model.modules())
    # the 4-bit base really differs from the float one: reloading on the wrong base would show
    full = load(out, load_in_4bit=False)
    assert full.load_options["load_in_4bit"] is True  # the manifest wins: the adapter belongs to the NF4 base


def test_manifest_records_the_run(trained, train_file):
    import hashlib

    import audit

    out, _, m, base = trained("lora")
    for key in ("method", "rank", "alpha", "config", "data", "seed", "steps", "loss_curve", "wall_time_s",
                "peak_rss_bytes", "trainable_parameters", "optimizer_state_bytes", "audit_version"):
        assert key in m, key
    assert m["method"] == "lora" and m["rank"] == 4 and m["alpha"] == 8.0
    assert m["data"]["sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert m["data"]["rows"] == 12
    assert m["audit_version"] == audit.__version__
    assert m["config"]["lr"] == 5e-3 and m["config"]["batch_size"] == 4
    assert m["peak_rss_bytes"] > 10 * 2**20
    # LoRA r=4 on 7 projections of 2 layers: A (4 x in) + B (out x 4) each
    hidden, inter, layers, r = 64, 256, 2, 4
    per_layer = 4 * r * (hidden + hidden) + 2 * r * (hidden + inter) + r * (inter + hidden)
    assert m["trainable_parameters"] == layers * per_layer
    n_tensors = layers * 7 * 2  # lora_A and lora_B per projection
    # AdamW keeps exp_avg + exp_avg_sq (fp32) per value and a scalar fp32 step per tensor
    assert m["optimizer_state_bytes"] == 2 * 4 * m["trainable_parameters"] + 4 * n_tensors
    assert not (out / "checkpoints").exists()


def test_audit_info_reads_the_checkpoints(trained):
    from typer.testing import CliRunner

    from audit.cli import app

    for method in ("lora", "galore"):
        out, *_ = trained(method)
        res = CliRunner().invoke(app, ["info", str(out), "--json"])
        assert res.exit_code == 0, res.output
        desc = json.loads(res.stdout[res.stdout.index("{"):])
        assert desc["method"] == method
        assert desc["kind"] == ("adapter" if method == "lora" else "full")


def test_dora_forward_equals_the_weight_decomposition_formula(trained, probe_batch):
    """W' = m * (W0 + s*B@A) / ||W0 + s*B@A||_row, computed by hand and put into a plain model."""
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from audit.lm.models import load

    out, after_training, _, base = trained("dora")
    dora = load(out).model
    plain = AutoModelForCausalLM.from_pretrained(str(base))
    plain_modules = dict(plain.named_modules())
    n_layers = 0
    with torch.no_grad():
        for name, layer in dora.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            w0 = layer.get_base_layer().weight.double()
            a = layer.lora_A["default"].weight.double()
            b = layer.lora_B["default"].weight.double()
            s = layer.scaling["default"]
            m = layer.lora_magnitude_vector["default"].weight.double().reshape(-1)
            assert b.abs().max() > 0 and (m - w0.norm(dim=1)).abs().max() > 1e-6  # both were trained
            direction = w0 + s * (b @ a)
            w_prime = m[:, None] * direction / direction.norm(dim=1, keepdim=True)
            target = plain_modules[name.replace("base_model.model.", "", 1)]
            target.weight.copy_(w_prime.float())
            n_layers += 1
    assert n_layers == 14
    torch.testing.assert_close(logits_of(plain, probe_batch), after_training, atol=5e-5, rtol=1e-5)
    # ...and it is not LoRA: W0 + s*B@A alone gives other logits
    lora_like = AutoModelForCausalLM.from_pretrained(str(base))
    lm = dict(lora_like.named_modules())
    with torch.no_grad():
        for name, layer in dora.named_modules():
            if isinstance(layer, LoraLayer):
                w = layer.get_base_layer().weight + layer.scaling["default"] * (
                    layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
                lm[name.replace("base_model.model.", "", 1)].weight.copy_(w)
    assert (logits_of(lora_like, probe_batch) - after_training).abs().max() > 1e-4


def test_dora_and_lora_on_gpt2_conv1d_reload_exactly(trained, probe_batch):
    from audit.lm.models import load

    for method in ("dora", "galore"):
        out, after_training, manifest, _ = trained(method, "gpt2")
        assert manifest["final_loss"] < manifest["initial_loss"]
        torch.testing.assert_close(logits_of(load(out).model, probe_batch), after_training, atol=2e-5, rtol=1e-5)
    cfg = json.loads((trained("dora", "gpt2")[0] / "adapter_config.json").read_text())
    assert cfg["fan_in_fan_out"] is True and sorted(cfg["target_modules"]) == ["c_attn", "c_fc", "c_proj"]


def test_galore_optimizer_state_is_low_rank_and_smaller_than_adamw(tiny_llama_dir, tiny_tokenizer):
    from audit.finetune.base import FinetuneConfig
    from audit.finetune.galore import GaLore
    from audit.finetune.train import optimizer_state_bytes

    cfg = FinetuneConfig(method="galore", model=str(tiny_llama_dir), data="-", out="-", galore_rank=4, lr=1e-3)
    method = GaLore()
    batch = tiny_tokenizer(SENTENCES, return_tensors="pt", padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)

    def one_step(model, opt):
        model(**batch).loss.backward()
        opt.step()

    torch.manual_seed(0)
    model = method.build(tiny_llama_dir, cfg)
    opt = method.optimizer(model, cfg)
    one_step(model, opt)
    projected = opt.param_groups[1]
    assert projected["rank"] == 4 and len(projected["params"]) == 14  # 7 projections x 2 layers
    for p in projected["params"]:
        m, n = p.shape
        expected = (m, 4) if m >= n else (4, n)
        st = opt.state[p]
        assert tuple(st["exp_avg"].shape) == expected and tuple(st["exp_avg_sq"].shape) == expected
        assert tuple(st["projector"].ortho_matrix.shape) == ((4, n) if m >= n else (m, 4))
    for p in opt.param_groups[0]["params"]:  # embeddings, norms, head: ordinary full-size Adam moments
        assert opt.state[p]["exp_avg"].shape == p.shape
    torch.manual_seed(0)
    model2 = method.build(tiny_llama_dir, cfg)
    adamw = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    one_step(model2, adamw)
    galore_bytes, adamw_bytes = optimizer_state_bytes(opt), optimizer_state_bytes(adamw)
    assert galore_bytes < adamw_bytes
    # the saving is exactly the projected weights' moments: 2*(m*n) -> 2*(low-rank) (+ projector)
    saved = sum(2 * p.numel() * 4 for p in projected["params"])
    low = sum(2 * opt.state[p]["exp_avg"].numel() * 4 + opt.state[p]["projector"].ortho_matrix.numel() * 4
              for p in projected["params"])
    assert adamw_bytes - galore_bytes == pytest.approx(saved - low, abs=64 * len(list(model2.parameters())))


def test_galore_projects_gpt2_conv1d_weights(tiny_gpt2_dir):
    from audit.finetune.base import FinetuneConfig
    from audit.finetune.full import load_causal_lm
    from audit.finetune.galore import galore_param_groups

    model = load_causal_lm(tiny_gpt2_dir)
    cfg = FinetuneConfig(method="galore", model="-", data="-", out="-", rank=2)
    rest, projected = galore_param_groups(model, cfg)
    conv = [m.weight for m in model.modules() if type(m).__name__ == "Conv1D"]
    assert len(conv) == 8 and {id(p) for p in projected["params"]} == {id(p) for p in conv}
    assert projected["rank"] == 2 and projected["proj_type"] == "std"
    assert not {id(p) for p in rest["params"]} & {id(p) for p in conv}


@pytest.mark.parametrize("arch,expected", [
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ("gpt2", ["c_attn", "c_proj", "c_fc"]),
    ("gpt_neox", ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
])
def test_default_targets_per_architecture(arch, expected):
    from transformers import AutoModelForCausalLM

    from audit.finetune.targets import default_target_modules, uses_conv1d
    from audit.lab.tiny import tiny_config

    model = AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size=64, hidden=32, layers=1, heads=2))
    assert default_target_modules(model) == expected
    assert uses_conv1d(model, expected) == (arch == "gpt2")


def test_unknown_target_module_is_a_clear_error(tiny_llama_dir):
    from audit.errors import ConfigError
    from audit.finetune.full import load_causal_lm
    from audit.finetune.targets import resolve_targets

    model = load_causal_lm(tiny_llama_dir)
    assert resolve_targets(model, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"--target-modules qproj: no such Linear/Conv1D layer.*available: .*q_proj"):
        resolve_targets(model, ["qproj"])


def test_truncated_base_is_a_one_line_error(tmp_path, tiny_llama_dir):
    import shutil

    from audit.errors import CheckpointError
    from audit.finetune.full import load_causal_lm

    d = shutil.copytree(tiny_llama_dir, tmp_path / "m")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated or corrupted safetensors file"):
        load_causal_lm(d)


def test_qlora_refuses_other_bit_widths(tiny_llama_dir):
    from audit.errors import ConfigError
    from audit.finetune.base import FinetuneConfig
    from audit.finetune.qlora import QLoRA

    cfg = FinetuneConfig(method="qlora", model=str(tiny_llama_dir), data="-", out="-", bits=2)
    with pytest.raises(ConfigError, match=r"--bits 2: QLoRA quantizes the base to 4-bit NF4 only"):
        QLoRA().build(tiny_llama_dir, cfg)
