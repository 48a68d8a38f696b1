"""Write a GGUF file from a Hugging Face Llama directory, the way llama.cpp's converter lays it out.

Independent of audit.lm.gguf (which reads GGUFs through transformers): tensors get llama.cpp's names, and
the q/k projections get llama.cpp's row permutation (it reorders each head's rotary halves so its own
RoPE kernel sees interleaved pairs; a reader has to undo it). Used by the tests to make a GGUF whose
exact source model is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of a q or k projection (rows grouped per head)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _names(layer: int) -> dict[str, str]:
    hf = f"model.layers.{layer}."
    blk = f"blk.{layer}."
    return {hf + "input_layernorm.weight": blk + "attn_norm.weight",
            hf + "self_attn.q_proj.weight": blk + "attn_q.weight",
            hf + "self_attn.k_proj.weight": blk + "attn_k.weight",
            hf + "self_attn.v_proj.weight": blk + "attn_v.weight",
            hf + "self_attn.o_proj.weight": blk + "attn_output.weight",
            hf + "post_attention_layernorm.weight": blk + "ffn_norm.weight",
            hf + "mlp.gate_proj.weight": blk + "ffn_gate.weight",
            hf + "mlp.up_proj.weight": blk + "ffn_up.weight",
            hf + "mlp.down_proj.weight": blk + "ffn_down.weight"}


def write_llama_gguf(model_dir: Path, out: Path, *, quant: Optional[str] = None,
                     chat_template: Optional[str] = None, name: str = "tiny llama") -> Path:
    """`model_dir` (LlamaForCausalLM + byte-level BPE tokenizer.json) -> a GGUF at `out`.

    `quant="Q8_0"` stores the 2-D weight matrices quantized with gguf-py (norms stay F32)."""
    import json

    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(name)
    w.add_license("apache-2.0")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float((cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_rope_dimension_count(cfg["hidden_size"] // n_head)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "Q8_0" else gguf.LlamaFileType.ALL_F32)

    vocab = tok["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    specials = {a["content"] for a in tok.get("added_tokens", []) if a.get("special")}
    types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, adder in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                       ("pad_token_id", w.add_pad_token_id)):
        if cfg.get(key) is not None:
            adder(int(cfg[key]))
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for layer in range(cfg["num_hidden_layers"]):
        names.update(_names(layer))
    for hf_name, gguf_name in names.items():
        if hf_name not in weights:
            continue  # tied lm_head
        t = weights[hf_name].astype(np.float32)
        if gguf_name.endswith("attn_q.weight"):
            t = llama_cpp_permute(t, n_head)
        elif gguf_name.endswith("attn_k.weight"):
            t = llama_cpp_permute(t, n_kv)
        if quant == "Q8_0" and t.ndim == 2:
            qt = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(gguf_name, gguf.quants.quantize(t, qt), raw_dtype=qt)
        else:
            w.add_tensor(gguf_name, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
