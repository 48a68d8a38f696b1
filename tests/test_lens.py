"""Logit lens: the last layer reproduces the model's output, intermediate layers read the un-normed
residual stream, for Llama, GPT-2 and GPT-NeoX, also through a PEFT wrapper."""

from __future__ import annotations

import pytest
import torch

from audit.errors import CheckpointError
from audit.probes.shift.lens import find_lens_parts, project, run_lens


TEXTS = ["The doctor said that the patient would recover soon.", "They went to the market"]


def _batch(tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(params=["llama", "gpt2", "gpt_neox"])
def arch_dir(request):
    return request.getfixturevalue({"llama": "tiny_llama_dir", "gpt2": "tiny_gpt2_dir",
                                    "gpt_neox": "tiny_neox_dir"}[request.param])


def test_last_layer_equals_model_output_distribution(arch_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(arch_dir)).eval()
    ids, mask = _batch(tiny_tokenizer)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
    out = run_lens(model, ids, mask)  # all positions
    assert len(out.layer_logits) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(torch.log_softmax(out.layer_logits[-1], -1),
                               torch.log_softmax(logits.reshape(-1, logits.shape[-1]).float(), -1),
                               atol=1e-5, rtol=1e-5)
    assert out.self_check_max_abs_diff < 1e-4
    # earlier layers really differ from the output (the lens is not just copying the logits)
    assert not torch.allclose(out.layer_logits[1], out.layer_logits[-1], atol=1e-3)


def test_intermediate_layers_are_unnormed_hidden_states(arch_dir, tiny_tokenizer):
    """Layer i < L is hidden_states[i] of transformers (before any final norm) projected once."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(arch_dir)).eval()
    ids, mask = _batch(tiny_tokenizer)
    last = mask.sum(1) - 1
    out = run_lens(model, ids, mask, positions=last)
    parts = find_lens_parts(model)
    with torch.inference_mode():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        rows = torch.arange(ids.shape[0])
        for i in range(model.config.num_hidden_layers):
            expected = project(parts, hs[i][rows, last]).float()
            torch.testing.assert_close(out.layer_logits[i], expected, atol=1e-5, rtol=1e-5)


def test_lens_through_peft_wrapper_and_with_adapter_disabled(tiny_lora_dir, tiny_llama_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from audit.lm.models import load

    handle = load(tiny_lora_dir)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    ids, mask = _batch(tiny_tokenizer)
    last = mask.sum(1) - 1
    rows = torch.arange(ids.shape[0])
    with torch.inference_mode():
        tuned_logits = handle.model(input_ids=ids, attention_mask=mask).logits[rows, last]
        base_logits = base(input_ids=ids, attention_mask=mask).logits[rows, last]
    tuned = run_lens(handle.model, ids, mask, positions=last)
    torch.testing.assert_close(tuned.layer_logits[-1], tuned_logits, atol=1e-5, rtol=1e-5)
    with handle.base_model() as m:
        disabled = run_lens(m, ids, mask, positions=last)
    torch.testing.assert_close(disabled.layer_logits[-1], base_logits, atol=1e-5, rtol=1e-5)
    # the embeddings (layer 0) are not adapted, the adapted layers are
    torch.testing.assert_close(disabled.layer_logits[0], tuned.layer_logits[0])
    assert not torch.allclose(disabled.layer_logits[-1], tuned.layer_logits[-1], atol=1e-4)


def test_self_check_catches_a_wrong_final_norm(tiny_llama_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    parts = find_lens_parts(model)
    parts.final_norm = torch.nn.Identity()  # as if the norm had been applied twice / not at all
    ids, mask = _batch(tiny_tokenizer)
    with pytest.raises(CheckpointError, match="last layer's projection differs"):
        run_lens(model, ids, mask, parts=parts)


def test_unsupported_architecture_is_named():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(2, 2)

    with pytest.raises(CheckpointError, match="cannot find the block list, final norm, unembedding"):
        find_lens_parts(Odd())
