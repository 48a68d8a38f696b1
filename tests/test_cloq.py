"""CLoQ: the closed-form init is the optimum of ||X(Q + AB^T - W)||_F, beats the data-free inits, and the
trained checkpoint reloads (4-bit for NF4, the saved quantized base for INT) to the same logits."""

from __future__ import annotations

import json

import pytest
import torch

from audit.finetune.cloq import CLoQ, cloq_factors, cloq_lora, damped, weighted_error
from audit.finetune.loftq import loftq_factors
from audit.finetune.quant import IntQuantizer, NF4Quantizer
from quant_helpers import one_torch_thread, train_capturing  # noqa: F401 (autouse fixture)

OUT_F, IN_F, N, RANK = 48, 64, 512, 4


@pytest.fixture(scope="module")
def problem():
    """A weight, strongly correlated inputs with very unequal feature scales (where calibration matters)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(OUT_F, IN_F, generator=g) * 0.1
    mix = torch.randn(IN_F, IN_F, generator=g)
    x = (torch.randn(N, IN_F, generator=g) @ mix) * torch.logspace(-1, 0.5, IN_F)
    h = x.double().T @ x.double()
    return w, x, h


def err_of(w, q, corr, x):
    """||X (Q + correction - W)^T||_F computed from the activations themselves (not via H)."""
    return float(torch.linalg.norm(x.double() @ (q.double() + corr.double() - w.double()).T))


@pytest.mark.parametrize("quantizer", [IntQuantizer(2, 32), IntQuantizer(3, 64), NF4Quantizer()],
                         ids=["int2", "int3", "nf4"])
def test_cloq_residual_is_the_tail_of_the_whitened_spectrum(problem, quantizer):
    w, x, h = problem
    q = quantizer.quantize(w)
    A, B, info = cloq_factors(w, q, h, RANK, damp=0.0)
    err = err_of(w, q, B @ A.T, x)
    L = torch.linalg.cholesky(h)
    sigma = torch.linalg.svdvals(L.T @ (w - q).double().T)
    assert err == pytest.approx(float(torch.sqrt((sigma[RANK:] ** 2).sum())), rel=1e-9)
    assert err == pytest.approx(info["residual"], rel=1e-9)
    assert weighted_error(w, q, B @ A.T, h) == pytest.approx(err, rel=1e-9)


@pytest.mark.parametrize("quantizer", [IntQuantizer(2, 32), NF4Quantizer()], ids=["int2", "nf4"])
def test_cloq_beats_zero_init_plain_svd_and_loftq(problem, quantizer):
    w, x, h = problem
    q = quantizer.quantize(w)
    scaling = 2.0  # alpha = 2r: the PEFT factors must absorb it
    lora_a, lora_b, _ = cloq_lora(w, q, h, RANK, scaling)  # default damping, as in training
    cloq = err_of(w, q, scaling * lora_b @ lora_a, x)
    zero = err_of(w, q, torch.zeros_like(w), x)
    U, S, Vh = torch.linalg.svd((w - q).double(), full_matrices=False)
    plain_svd = err_of(w, q, (U[:, :RANK] * S[:RANK]) @ Vh[:RANK], x)
    q1, L1, R1, _ = loftq_factors(w, quantizer, RANK, num_iter=1)
    q5, L5, R5, _ = loftq_factors(w, quantizer, RANK, num_iter=5)
    loftq1, loftq5 = err_of(w, q1, L1 @ R1, x), err_of(w, q5, L5 @ R5, x)
    assert cloq < plain_svd < zero
    assert cloq < loftq1 and cloq < loftq5
    assert plain_svd == pytest.approx(loftq1, rel=1e-6)  # LoftQ with one iteration is the data-free fit


def test_cloq_equals_the_gradient_descent_optimum():
    """Descent on the same objective (from a random start, L-BFGS in float64) ends where the closed form is."""
    g = torch.Generator().manual_seed(5)
    out_f, in_f, r = 24, 32, 3
    w = torch.randn(out_f, in_f, generator=g) * 0.1
    x = (torch.randn(256, in_f, generator=g) @ torch.randn(in_f, in_f, generator=g)) * torch.logspace(-0.5, 0.5, in_f)
    h = x.double().T @ x.double()
    q = IntQuantizer(2, 32).quantize(w)
    A, B, _ = cloq_factors(w, q, h, r, damp=0.0)
    closed = weighted_error(w, q, B @ A.T, h)
    dW = (w - q).double()
    a = (torch.randn(in_f, r, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    b = (torch.randn(out_f, r, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    scale = float(torch.diagonal(h).mean())
    opt = torch.optim.LBFGS([a, b], lr=1, max_iter=400, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        e = b @ a.T - dW
        loss = torch.einsum("oi,ij,oj->", e, h, e) / scale
        loss.backward()
        return loss

    opt.step(closure)
    gd = weighted_error(w, q, (b @ a.T).detach(), h)
    zero = weighted_error(w, q, torch.zeros_like(w), h)
    assert closed <= gd * (1 + 1e-9)  # nothing found by descent beats the closed form
    assert gd == pytest.approx(closed, rel=1e-5)  # and descent reaches it
    assert closed < 0.9 * zero


def test_peft_factors_absorb_the_scaling(problem):
    w, _, h = problem
    q = IntQuantizer(3, 64).quantize(w)
    A, B, _ = cloq_factors(w, q, h, RANK)
    for scaling in (1.0, 2.0, 0.25):
        lora_a, lora_b, _ = cloq_lora(w, q, h, RANK, scaling)
        assert lora_a.shape == (RANK, IN_F) and lora_b.shape == (OUT_F, RANK)
        assert torch.allclose(scaling * lora_b.double() @ lora_a.double(), B @ A.T, atol=1e-6)


def test_rank_deficient_calibration_is_damped_not_broken(problem):
    """Fewer tokens than features: H is singular; damping keeps the init finite and still better than zero."""
    w, x, _ = problem
    few = x[:16]
    h = few.double().T @ few.double()
    assert torch.linalg.matrix_rank(h) < IN_F
    q = IntQuantizer(2, 32).quantize(w)
    A, B, _ = cloq_factors(w, q, h, RANK)
    assert torch.isfinite(A).all() and torch.isfinite(B).all()
    assert err_of(w, q, B @ A.T, few) < err_of(w, q, torch.zeros_like(w), few)
    hd = damped(h)
    assert float(torch.diagonal(hd - h).mean()) == pytest.approx(0.01 * float(torch.diagonal(h).mean()))


def _layer_output_error(model, fp_model, enc):
    """Mean squared difference of final logits between a model and the full-precision one."""
    with torch.no_grad():
        return float(((model(**enc).logits - fp_model(**enc).logits) ** 2).mean())


@pytest.mark.slow
def test_cloq_int2_trains_saves_and_reloads(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from audit.lm.models import load
    from quant_helpers import probe_batch

    out, cap = train_capturing(CLoQ, tiny_llama_dir, tmp_path, quantizer="int", bits=2, group_size=32)
    assert cap["loss_after"] < cap["loss_before"]
    manifest = json.loads((out / "manifest.json").read_text())
    quant = manifest["quantization"]
    assert quant["quantizer"] == "int" and quant["bits"] == 2 and quant["group_size"] == 32
    assert quant["simulated"] is True and quant["base_sha256"]
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str((out / "quantized_base").resolve())
    handle = load(out)
    enc, _ = probe_batch(handle.tokenizer)
    with torch.no_grad():
        logits = handle.model(**enc).logits
    assert torch.allclose(logits, cap["logits"], atol=1e-5)
    # the stored base holds 2-bit weights: at most 4 distinct values per group of 32 inputs
    base = AutoModelForCausalLM.from_pretrained(str(out / "quantized_base"))
    wq = base.model.layers[0].self_attn.q_proj.weight.reshape(-1, 32)
    assert max(torch.unique(row).numel() for row in wq) <= 4


@pytest.mark.slow
def test_cloq_init_brings_the_quantized_model_closer_to_full_precision(tiny_llama_dir, tmp_path):
    """Model level: with the CLoQ factors the 2-bit model's logits are closer to the FP model's than with
    the adapter disabled (QLoRA's zero init) on the calibration text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audit.finetune.train import config_from
    from quant_helpers import PROBE_TEXTS, probe_batch

    cfg = config_from(method="cloq", model=str(tiny_llama_dir), data="unused", out=str(tmp_path), rank=8,
                      quantizer="int", bits=2, group_size=32)
    model = CLoQ().build(tiny_llama_dir, cfg, calibration_texts=PROBE_TEXTS * 4)
    model.eval()
    fp = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    enc, _ = probe_batch(AutoTokenizer.from_pretrained(str(tiny_llama_dir)))
    with_init = _layer_output_error(model, fp, enc)
    with model.disable_adapter():
        zero_init = _layer_output_error(model, fp, enc)
    assert with_init < 0.7 * zero_init


@pytest.mark.slow
def test_cloq_nf4_reloads_in_4bit_with_the_same_logits(tiny_gpt2_dir, tmp_path):
    """NF4 path on GPT-2 (Conv1D): Q is bitsandbytes' own 4-bit weight, so a 4-bit reload gives the same model."""
    from audit.lm.models import load
    from quant_helpers import probe_batch

    out, cap = train_capturing(CLoQ, tiny_gpt2_dir, tmp_path, quantizer="nf4", bits=4)
    assert cap["loss_after"] < cap["loss_before"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["quant_type"] == "nf4" and manifest["quantization"]["double_quant"] is True
    assert manifest["calibration"]["n_tokens"] > 0
    assert not (out / "quantized_base").exists()
    handle = load(out)  # the manifest asks for the 4-bit base; the loader honours it
    assert handle.load_options["load_in_4bit"] is True
    enc, _ = probe_batch(handle.tokenizer)
    with torch.no_grad():
        logits = handle.model(**enc).logits
    assert torch.allclose(logits, cap["logits"], atol=1e-5)
