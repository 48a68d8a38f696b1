"""The memory estimate against what a tiny model really holds on CPU: parameter, adapter, gradient and
optimizer-state bytes exactly; activations (bytes autograd saves for backward) roughly, on shapes other
than the one the per-token constant was read from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audit.finetune.memory_estimate import LlamaShape, activation_bytes, estimate, layer_activation_bytes, lora_params

AUDIT = Path(sys.executable).with_name("audit")


def _tiny(shape: LlamaShape):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                      vocab_size=shape.vocab, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                      max_position_embeddings=256, tie_word_embeddings=shape.tied)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def saved_activation_bytes(model, batch: int, seq: int) -> int:
    """Bytes of the distinct storages autograd saves in one forward pass, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


SHAPES = [LlamaShape(0, hidden=96, layers=3, intermediate=256, vocab=700, heads=6, kv_heads=2),
          LlamaShape(0, hidden=128, layers=2, intermediate=344, vocab=1000, heads=4, kv_heads=4, tied=True)]


@pytest.mark.parametrize("shape", SHAPES, ids=["gqa", "tied"])
def test_counts_are_exact(shape):
    from peft import LoraConfig, get_peft_model

    model = _tiny(shape)
    shape = LlamaShape(sum(p.numel() for p in model.parameters()), **{k: getattr(shape, k) for k in
                       ("hidden", "layers", "intermediate", "vocab", "heads", "kv_heads", "tied")})
    assert shape.counted_params() == shape.n_params
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for dora in (False, True):
        peft = get_peft_model(_tiny(shape), LoraConfig(r=4, target_modules=targets, use_dora=dora))
        n_adapter = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        assert lora_params(shape, 4, dora=dora) == n_adapter
    full = estimate("full", shape, dtype="float32", batch=1, seq=8)
    assert full.weights == full.gradients == 4 * shape.n_params
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.zeros(1, 8, dtype=torch.long), labels=torch.zeros(1, 8, dtype=torch.long)).loss.backward()
    opt.step()
    moments = sum(v.numel() * v.element_size() for st in opt.state.values() for k, v in st.items() if k != "step")
    assert full.optimizer == moments
    assert sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()) == full.gradients


@pytest.mark.parametrize("shape", SHAPES, ids=["gqa", "tied"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_activation_formula_is_within_a_quarter_of_what_autograd_saves(shape, dtype):
    model = _tiny(shape).to(dtype)
    act_bytes = 4 if dtype == torch.float32 else 2
    measured = saved_activation_bytes(model, batch=2, seq=48)
    assert activation_bytes(shape, 2, 48, act_bytes, False) == pytest.approx(measured, rel=0.25)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    kept = saved_activation_bytes(model, batch=2, seq=48)
    assert kept < measured
    # the forward pass keeps each layer's input; the one layer recomputed in the backward pass comes on top
    recomputed = layer_activation_bytes(shape, 2 * 48, act_bytes)
    assert activation_bytes(shape, 2, 48, act_bytes, True) - recomputed == pytest.approx(kept, rel=0.1)


def test_seven_b_table_orders_the_methods_as_expected():
    shape = LlamaShape.llama2_7b()
    assert shape.counted_params() == shape.n_params  # Llama-2-7B: 6,738,415,616 parameters
    rows = {m: estimate(m, shape, rank=16, dtype="bfloat16") for m in
            ("full", "galore", "lora", "dora", "qlora", "cloq", "loftq", "irqlora")}
    assert rows["full"].optimizer == 4 * shape.n_params  # bf16 AdamW moments: 2 x 2 bytes
    assert rows["qlora"].weights < 0.4 * rows["lora"].weights
    assert rows["qlora"].total < rows["lora"].total < rows["galore"].total < rows["full"].total
    eight = estimate("full", shape, dtype="bfloat16", optimizer="adamw8bit")
    assert eight.optimizer == pytest.approx(2 * shape.n_params, rel=0.05)
    ckpt = estimate("lora", shape, gradient_checkpointing=True)
    assert ckpt.activations < 0.2 * rows["lora"].activations


def test_memory_estimate_command():
    proc = subprocess.run([str(AUDIT), "memory-estimate", "--params", "7e9", "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["method"] for r in rows] == ["full", "galore", "lora", "dora", "qlora", "cloq", "loftq", "irqlora"]
    bad = subprocess.run([str(AUDIT), "memory-estimate", "--params", "7e9", "--dtype", "int3"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "audit: error: --dtype int3: expected float32, bfloat16 or float16"]
