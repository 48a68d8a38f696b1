"""IR-QLoRA: ICQ raises (never lowers) the per-block code entropy, tau = 0 is plain NF4; IEC's forward
equals standard LoRA with folded factors, so the saved plain PEFT adapter reproduces the trained model."""

from __future__ import annotations

import json

import pytest
import torch

from audit.errors import ConfigError
from audit.finetune.irqlora import (IRQLoRA, add_elastic_connections, block_entropy, folded_factors,
                                    icq_dequantize, icq_quantize, icq_search, icq_search_loop, nf4_sigma)
from audit.finetune.quant import NF4Quantizer
from quant_helpers import one_torch_thread  # noqa: F401 (autouse fixture)


def skewed_weight(seed=0):
    """Blocks with offsets and skew, where plain NF4 wastes levels."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(64, 256, generator=g) * 0.02
    w += 0.02 * torch.randn(64, 1, generator=g)  # per-row offsets
    w[:8] = torch.rand(8, 256, generator=g) ** 3 * 0.05  # heavily skewed rows
    return w


def test_entropy_of_code_histograms():
    uniform = torch.arange(16).repeat(4)[None]
    constant = torch.full((1, 64), 7)
    half = torch.tensor([0, 1] * 32)[None]
    assert block_entropy(torch.cat([uniform, constant, half])).tolist() == pytest.approx([4.0, 0.0, 1.0])


def test_sigma_is_the_inverse_outer_nf4_quantile():
    assert nf4_sigma() == pytest.approx(1 / 1.8481308, rel=1e-5)


def test_icq_entropy_never_below_plain_nf4_and_often_above():
    w = skewed_weight()
    tau, plain, best = icq_search(w, tau_range=0.1, tau_n=100)
    assert (best >= plain).all()
    assert (best > plain).float().mean() > 0.5
    assert float(best.mean()) > float(plain.mean()) + 0.05
    # the chosen tau really produces that entropy
    shifted = (w.reshape(-1, 64) - tau[:, None]).reshape(w.shape)
    codes, _ = NF4Quantizer().encode(shifted)
    assert torch.allclose(block_entropy(codes.reshape(-1, 64)), best)


def test_tau_zero_reproduces_plain_nf4_exactly():
    w = skewed_weight(1)
    zero = torch.zeros(w.numel() // 64)
    assert torch.equal(icq_dequantize(w, zero, NF4Quantizer()), NF4Quantizer().quantize(w))
    # a zero-width grid changes nothing that NF4 would not (no block gains entropy from tau = median alone
    # unless it strictly helps), and the quantized weight stays close to W
    w_hat, info = icq_quantize(w, tau_range=0.1, tau_n=50)
    assert info["entropy_icq"] >= info["entropy_nf4"]
    rel = float((w_hat - w).norm() / w.norm())
    assert rel < 0.15


def awkward_weight(seed=0):
    """Skewed and offset blocks plus the awkward ones: constant, large offset, few distinct values (as in a
    de-quantized GGUF), float16-rounded."""
    g = torch.Generator().manual_seed(seed)
    w = skewed_weight(seed)[:, :192].clone()
    w[9, :64] = 0.01
    w[10] += 3.0
    w[11, :64] = torch.randint(0, 3, (64,), generator=g).float() * 0.01
    w[12] = w[12].half().float()
    w[13] = torch.round(w[13] / 0.004) * 0.004 + 0.001
    return w


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tau_range,tau_n", [(0.1, 100), (0.5, 7), (0.0, 3), (0.1, 0)])
def test_vectorised_search_equals_the_candidate_loop(seed, tau_range, tau_n):
    """Same chosen tau and the same entropies, bit for bit, as encoding every weight once per candidate."""
    w = awkward_weight(seed)
    fast, slow = icq_search(w, tau_range, tau_n), icq_search_loop(w, tau_range, tau_n)
    for got, expected in zip(fast, slow):
        assert torch.equal(got, expected)
    if tau_range > 0:
        assert (fast[0] != 0).any()  # the grid moved some blocks, so the comparison is not vacuous


def test_icq_requires_whole_blocks():
    with pytest.raises(ConfigError, match="not a multiple of the NF4 block size 64"):
        icq_search(torch.randn(10, 10))


def _lora_layer(n_in=64, n_out=96, r=4, seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    net = torch.nn.Sequential()
    net.add_module("proj", torch.nn.Linear(n_in, n_out))
    model = get_peft_model(net, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["proj"]))
    layer = model.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.3)
    return model, layer


def test_iec_forward_matches_the_reference_formula_and_the_folded_lora():
    model, layer = _lora_layer()
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        plain = layer(x)
    add_elastic_connections(layer, "proj")
    with torch.no_grad():
        assert torch.allclose(layer(x), plain)  # betas start at 0: no change
        layer.lora_A["default"].iec_beta.fill_(0.7)
        layer.lora_B["default"].iec_beta.fill_(-1.3)
        got = layer(x)
    # the reference (htqin/IR-QLoRA IRQLoraLinear4bit.forward), written out with reshapes
    A, B = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    s = layer.scaling["default"]
    z = x @ A.T + 0.7 * x.reshape(3, 5, 4, 16).mean(-1)
    y = ((z @ B.T).reshape(3, 5, 4, 24) + (-1.3) * z.unsqueeze(-1)).reshape(3, 5, 96)
    base = layer.get_base_layer()
    expected = base(x) + s * y
    assert torch.allclose(got, expected, atol=1e-5)
    A2, B2 = folded_factors(layer)
    assert torch.allclose(base(x) + s * (x @ A2.T) @ B2.T, expected, atol=1e-5)


def test_iec_rank_must_divide_the_layer_sizes():
    _, layer = _lora_layer(n_in=64, n_out=96, r=5)
    with pytest.raises(ConfigError, match="rank 5 must divide its input size 64 and output size 96"):
        add_elastic_connections(layer, "proj")


@pytest.mark.slow
def test_irqlora_trains_and_plain_peft_reproduces_it(tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from audit.lm.models import load
    from quant_helpers import probe_batch, train_capturing

    out, cap = train_capturing(IRQLoRA, tiny_llama_dir, tmp_path, irqlora_tau_n=20)
    assert cap["loss_after"] < cap["loss_before"]
    manifest = json.loads((out / "manifest.json").read_text())
    betas = manifest["iec"]["betas"]
    assert len(betas) == 14 and any(abs(a) > 0 or abs(b) > 0 for a, b in betas.values())  # IEC was trained
    layers = manifest["initialisation"]["layers"]
    assert all(v["entropy_icq"] >= v["entropy_nf4"] for v in layers.values())
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "iec" in k]  # a standard adapter
    handle = load(out)
    enc, _ = probe_batch(handle.tokenizer)
    with torch.no_grad():
        logits = handle.model(**enc).logits
    assert torch.allclose(logits, cap["logits"], atol=1e-5)
    # transformers + PEFT alone, no audit code involved
    base = AutoModelForCausalLM.from_pretrained(json.loads((out / "adapter_config.json").read_text())
                                                ["base_model_name_or_path"])
    plain = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        assert torch.allclose(plain(**enc).logits, cap["logits"], atol=1e-5)


@pytest.mark.slow
def test_irqlora_resume_restores_the_elastic_connections(tiny_llama_dir, tmp_path):
    """Interrupted at step 6 with a checkpoint at step 4, then resumed: the same adapter (betas included,
    folded into the saved factors) as the uninterrupted run, because build() is deterministic."""
    from safetensors.torch import load_file

    from audit.finetune.train import config_from, train
    from quant_helpers import write_data

    data = write_data(tmp_path / "train.jsonl")
    fields = dict(method="irqlora", model=str(tiny_llama_dir), data=str(data), rank=8, steps=8, batch_size=4,
                  lr=5e-3, schedule="constant", max_length=32, irqlora_tau_n=10, save_every=4)
    straight = train(config_from(out=str(tmp_path / "a"), **fields))

    class Stop(Exception):
        pass

    def stop_at_6(step, loss):
        if step == 6:
            raise Stop

    with pytest.raises(Stop):
        train(config_from(out=str(tmp_path / "b"), **fields), on_step=stop_at_6)
    resumed = train(config_from(out=str(tmp_path / "b"), resume=True, **fields))
    a = load_file(str(straight / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["resumed_from_step"] == 4
