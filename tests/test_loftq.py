"""LoftQ: alternating quantization / SVD lowers ||W - Q - AB^T||_F below zero init; runs on the weight's device;
the trained adapter reloads on its saved quantized base to the same logits."""

from __future__ import annotations

import json

import pytest
import torch

from audit.errors import ConfigError
from audit.finetune.loftq import LoftQ, loftq_factors, truncated_svd
from audit.finetune.quant import IntQuantizer, NF4Quantizer
from quant_helpers import one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("quantizer", [NF4Quantizer(), IntQuantizer(3, 32)], ids=["nf4", "int3"])
def test_loftq_error_decreases_or_holds_over_iterations(quantizer, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(96, 128, generator=g) * 0.02
    _, _, _, errors = loftq_factors(w, quantizer, rank=8, num_iter=6)
    assert len(errors) == 7
    for before, after in zip(errors[1:], errors[2:]):
        assert after <= before * (1 + 1e-6)
    assert errors[-1] < errors[1] < errors[0]


def test_loftq_int2_beats_zero_init_at_every_iteration():
    """At 2 bits single iterations can wobble (the quantizer is not the exact minimiser over Q), but every
    iterate beats zero init and the last beats the first."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 128, generator=g) * 0.02
    _, _, _, errors = loftq_factors(w, IntQuantizer(2, 64), rank=8, num_iter=6)
    assert all(e < errors[0] for e in errors[1:])
    assert errors[-1] < errors[1]


def test_first_iteration_is_the_best_rank_r_fit_of_the_residual():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(40, 64, generator=g)
    q, L, R, errors = loftq_factors(w, NF4Quantizer(), rank=5, num_iter=1)
    assert torch.equal(q, NF4Quantizer().quantize(w))
    sigma = torch.linalg.svdvals((w - q).double())
    assert errors[1] == pytest.approx(float(torch.sqrt((sigma[5:] ** 2).sum())), rel=1e-9)
    # balanced split: L = U sqrt(S), R = sqrt(S) V^T have equal column / row norms
    assert torch.allclose(L.norm(dim=0), R.norm(dim=1), rtol=1e-9)


def test_truncated_svd_pads_ranks_beyond_the_matrix():
    L, R = truncated_svd(torch.randn(3, 5), 4)
    assert L.shape == (3, 4) and R.shape == (4, 5)
    assert torch.equal(L[:, 3], torch.zeros(3))


def test_loftq_stays_on_the_weight_device():
    w = torch.randn(16, 64, dtype=torch.float32)
    q, L, R, _ = loftq_factors(w, IntQuantizer(4, 64), rank=2, num_iter=2)
    assert q.device == w.device == L.device == R.device
    with pytest.raises(ConfigError, match="loftq_iter 0"):
        loftq_factors(w, IntQuantizer(4, 64), rank=2, num_iter=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loftq_runs_on_cuda():
    w = torch.randn(64, 128, device="cuda")
    q, L, R, errors = loftq_factors(w, NF4Quantizer(), rank=4, num_iter=2)
    assert q.device.type == L.device.type == "cuda"
    cpu = loftq_factors(w.cpu(), NF4Quantizer(), rank=4, num_iter=2)
    assert errors[-1] == pytest.approx(cpu[3][-1], rel=1e-4)


@pytest.mark.slow
def test_loftq_trains_saves_and_reloads(tiny_gpt2_dir, tmp_path):
    from audit.lm.models import load
    from quant_helpers import probe_batch, train_capturing

    out, cap = train_capturing(LoftQ, tiny_gpt2_dir, tmp_path, quantizer="nf4", bits=4, loftq_iter=3)
    assert cap["loss_after"] < cap["loss_before"]
    manifest = json.loads((out / "manifest.json").read_text())
    layers = manifest["initialisation"]["layers"]
    assert layers and all(len(v["frobenius_error_by_iteration"]) == 4 for v in layers.values())
    handle = load(out)
    enc, _ = probe_batch(handle.tokenizer)
    with torch.no_grad():
        logits = handle.model(**enc).logits
    assert torch.allclose(logits, cap["logits"], atol=1e-5)


@pytest.mark.slow
def test_loftq_build_initialises_every_target_layer(tiny_llama_dir, tmp_path):
    """After build: each target's stored base is Q_T (not quant(W) when T > 1) and Q_T + s*B@A is closer
    to W than quant(W) alone (zero init) in Frobenius norm."""
    from transformers import AutoModelForCausalLM

    from audit.finetune.quantized_lora import lora_layers
    from audit.finetune.train import config_from

    cfg = config_from(method="loftq", model=str(tiny_llama_dir), data="unused", out=str(tmp_path), rank=8,
                      quantizer="int", bits=2, group_size=32, loftq_iter=4)
    model = LoftQ().build(tiny_llama_dir, cfg)
    fp = dict(AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).named_modules())
    layers = lora_layers(model)
    assert len(layers) == 14
    quantizer = IntQuantizer(2, 32)
    for name, layer in layers.items():
        w = fp[name].weight.detach()
        q = layer.get_base_layer().weight.detach()
        s = layer.scaling["default"]
        corrected = q + s * layer.lora_B["default"].weight.detach() @ layer.lora_A["default"].weight.detach()
        zero_init = float((w - quantizer.quantize(w)).norm())
        assert float((w - corrected).norm()) < zero_init
        assert not torch.equal(q, quantizer.quantize(w))
