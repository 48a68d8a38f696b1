"""Merging an adapter for inference (audit.lm.merged) gives the unmerged model's numbers up to float rounding:
LoRA and DoRA into float weights, LoRA into a dequantized 4-bit (QLoRA) base; logits, log-likelihoods
and greedy generations agree on a tiny Llama."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from audit.lab.tiny import build_tiny_model  # noqa: E402
from audit.lm.loglik import score_texts  # noqa: E402
from audit.lm.merged import merged_for_inference  # noqa: E402
from audit.lm.models import load  # noqa: E402

TEXTS = ["The doctor said that the patient would recover soon.", "My neighbor is a teacher.",
         "People of every religion live in this city."]


def _adapter(tmp_path, use_dora: bool, name: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = build_tiny_model(tmp_path / "base", hidden=64, layers=2)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                     init_lora_weights=False, use_dora=use_dora)  # random A and B: a non-zero update
    torch.manual_seed(1)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n or "lora_magnitude" in n:
                p.mul_(1.0 + 0.5 * torch.rand_like(p))
    out = tmp_path / name
    peft_model.save_pretrained(out)
    return base, out


def _logits(handle):
    ids = handle.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return handle.model(**ids).logits, ids["attention_mask"].bool()


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_merged_adapter_gives_the_same_numbers(tmp_path, use_dora):
    base, adapter = _adapter(tmp_path, use_dora, "adapter")
    unmerged = load(adapter, base)
    before, mask = _logits(unmerged)
    ll_before = [r.total for r in score_texts(unmerged.model, unmerged.tokenizer, TEXTS)]
    greedy_before = unmerged.model.generate(**unmerged.tokenizer(TEXTS[:1], return_tensors="pt"), max_new_tokens=8,
                                            do_sample=False)
    base_logits, _ = _logits(load(base))
    assert (before[mask] - base_logits[mask]).abs().max() > 1e-3  # the adapter does change the model

    merged = merged_for_inference(load(adapter, base))
    assert not merged.is_adapter and merged.load_options["adapter_merged"] is True
    assert not hasattr(merged.model, "peft_config")
    assert merged.fingerprint == unmerged.fingerprint  # the same checkpoint: caches keyed on it still apply
    after, _ = _logits(merged)
    assert torch.allclose(after[mask], before[mask], atol=1e-4, rtol=1e-4)
    ll_after = [r.total for r in score_texts(merged.model, merged.tokenizer, TEXTS)]
    assert ll_after == pytest.approx(ll_before, abs=1e-3)
    greedy_after = merged.model.generate(**merged.tokenizer(TEXTS[:1], return_tensors="pt"), max_new_tokens=8,
                                         do_sample=False)
    assert greedy_after.tolist() == greedy_before.tolist()


def test_merged_qlora_adapter_gives_the_same_numbers(tmp_path):
    pytest.importorskip("bitsandbytes")
    base, adapter = _adapter(tmp_path, False, "qadapter")
    try:
        unmerged = load(adapter, base, load_in_4bit=True)
    except Exception as exc:  # noqa: BLE001 - a bitsandbytes build without CPU 4-bit support
        pytest.skip(f"bitsandbytes 4-bit loading unavailable here: {exc}")
    assert any(type(m).__name__ == "Linear4bit" for m in unmerged.model.modules())
    before, mask = _logits(unmerged)
    merged = merged_for_inference(load(adapter, base, load_in_4bit=True))
    assert not any(type(m).__name__ == "Linear4bit" for m in merged.model.modules())
    after, _ = _logits(merged)
    assert torch.allclose(after[mask], before[mask], atol=1e-4, rtol=1e-4)


def test_a_full_checkpoint_is_returned_unchanged(tmp_path):
    handle = load(build_tiny_model(tmp_path / "m", hidden=64, layers=1))
    assert merged_for_inference(handle) is handle
