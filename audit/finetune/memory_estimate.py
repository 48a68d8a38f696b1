"""Peak training memory per fine-tuning method, from parameter counts (before anyone rents a GPU).

    estimate_all(LlamaShape.llama2_7b(), rank=16, batch=1, seq=2048, dtype="bfloat16")

Per method, bytes of: weights (the base as this toolkit stores it while training), trainable parameters,
gradients, optimizer state, activations (rough), and their sum. Counting rules, per parameter:

* weights: 4 B float32, 2 B bf16. Real 4-bit (QLoRA, CLoQ with NF4; bitsandbytes): 0.5 B per quantized value
  plus double-quantized block constants (8 bits per 64 values + 32 bits per 64*256), and the unquantized
  embeddings / LM head / norms in float32 (peft's prepare_model_for_kbit_training upcasts them).
  LoftQ, IR-QLoRA and CLoQ with the int quantizer run *simulated* quantization here: the quantized base
  is stored de-quantized, so it costs what an unquantized base costs.
* gradients: one per trainable parameter, in its dtype (LoRA factors are float32: PEFT upcasts them).
* AdamW: two moments per trainable parameter in its dtype (8 B float32); 8-bit AdamW: 2 B (+ block absmax).
  GaLore: for each projected (m x n) weight, moments of r x max(m, n) and a projector of r x min(m, n);
  plain AdamW for the rest.
* activations, per layer and token, values autograd saves for the backward pass with SDPA attention (no
  s x s score matrix): 14 h + 3 I (RMSNorm inputs and outputs, q, k, v after rotary and repeat_kv, the
  attention output, residual sums; the gated MLP's gate, up and product), times 2 B for bf16 weights and
  4 B for float32 weights (also under bf16 autocast: it saves bf16 copies of matmul inputs and weights next
  to float32 norm outputs, measured about as large as float32); plus, outside the layers, the float32
  logits (b s V) and 3 h per token. Gradient checkpointing keeps each layer's input (h values) plus one
  layer recomputed at a time. A rough count: kernels add workspace, allocators fragment.

Checked on a tiny model (tests/test_memory_estimate.py): weights, gradients and optimizer state equal the
measured tensor bytes exactly; activations are compared with the bytes autograd actually saved.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, file_error

METHODS = ("full", "galore", "lora", "dora", "qlora", "cloq", "loftq", "irqlora")
GIB = 1024 ** 3


@dataclass(frozen=True)
class LlamaShape:
    """The sizes that decide memory. `n_params` may be given on its own (e.g. 7e9): the layer sizes then
    default to Llama-2-7B's, with the number of layers scaled to match."""

    n_params: int
    hidden: int = 4096
    layers: int = 32
    intermediate: int = 11008
    vocab: int = 32000
    heads: int = 32
    kv_heads: int = 32
    tied: bool = False

    @classmethod
    def llama2_7b(cls) -> "LlamaShape":
        return cls(n_params=6_738_415_616)

    @classmethod
    def from_params(cls, n_params: float) -> "LlamaShape":
        if not n_params >= 1e5:
            raise ConfigError(f"--params {n_params}: expected a parameter count such as 7e9")
        ref = cls.llama2_7b()
        embed = 2 * ref.vocab * ref.hidden
        layers = max(1, round((n_params - embed) / ref.per_layer_params()))
        return replace(ref, n_params=int(n_params), layers=layers)

    @classmethod
    def from_config(cls, path: Path) -> "LlamaShape":
        """From a model directory's config.json (Llama-style names; GPT-2 / NeoX names are mapped)."""
        f = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
        try:
            c = json.loads(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise file_error(f, "missing; --model must be a model directory with config.json") from None
        except ValueError:
            raise file_error(f, "invalid JSON") from None
        h = c.get("hidden_size") or c.get("n_embd")
        n_layers = c.get("num_hidden_layers") or c.get("n_layer")
        if not h or not n_layers:
            raise file_error(f, "no hidden_size / num_hidden_layers; cannot estimate memory for this architecture")
        heads = c.get("num_attention_heads") or c.get("n_head") or 1
        shape = cls(n_params=0, hidden=int(h), layers=int(n_layers),
                    intermediate=int(c.get("intermediate_size") or c.get("n_inner") or 4 * h),
                    vocab=int(c.get("vocab_size", 32000)), heads=int(heads),
                    kv_heads=int(c.get("num_key_value_heads") or heads), tied=bool(c.get("tie_word_embeddings")))
        return replace(shape, n_params=shape.counted_params())

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    def projection_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of the 7 adapted projections of one decoder layer (q, k, v, o, gate, up, down)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]

    def per_layer_params(self) -> int:
        return sum(o * i for o, i in self.projection_shapes()) + 2 * self.hidden

    def counted_params(self) -> int:
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.per_layer_params() + embed + self.hidden

    def quantized_params(self) -> int:
        """Values in the block projections (what 4-bit quantization stores); the rest stays unquantized."""
        return self.layers * sum(o * i for o, i in self.projection_shapes())


@dataclass(frozen=True)
class MemoryEstimate:
    method: str
    weights: float
    trainable_params: int
    gradients: float
    optimizer: float
    activations: float
    note: str = ""

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def _nf4_bytes(n: int) -> float:
    """bitsandbytes NF4 with double quantization: 4 bits + 8/64 + 32/(64*256) bits per value."""
    return n * (4 + 8 / 64 + 32 / (64 * 256)) / 8


def _adam_bytes(n: int, value_bytes: int, optimizer: str) -> float:
    if optimizer == "adamw":
        return 2 * n * value_bytes
    return 2 * n + 2 * 4 * math.ceil(n / 256)  # one byte per moment + a float32 absmax per 256-value block


def lora_params(shape: LlamaShape, rank: int, dora: bool = False) -> int:
    per_layer = sum(rank * (o + i) + (o if dora else 0) for o, i in shape.projection_shapes())
    return shape.layers * per_layer


def activation_bytes(shape: LlamaShape, batch: int, seq: int, act_bytes: int, checkpointing: bool) -> float:
    """Rough bytes autograd keeps for the backward pass (see the module docstring)."""
    tokens = batch * seq
    outside = tokens * (shape.vocab * 4 + 3 * shape.hidden * act_bytes)  # float32 logits, embedding, final norm
    if checkpointing:  # saved in the forward pass: each layer's input; in the backward: one layer recomputed
        return tokens * shape.layers * shape.hidden * act_bytes + outside + layer_activation_bytes(shape, tokens,
                                                                                                   act_bytes)
    return shape.layers * layer_activation_bytes(shape, tokens, act_bytes) + outside


def layer_activation_bytes(shape: LlamaShape, tokens: int, act_bytes: int) -> float:
    """What one decoder layer saves for its backward pass: (14 h + 3 I) values per token."""
    return tokens * (14 * shape.hidden + 3 * shape.intermediate) * act_bytes


def estimate(method: str, shape: LlamaShape, rank: int = 16, batch: int = 1, seq: int = 2048,
             dtype: str = "bfloat16", optimizer: str = "adamw", gradient_checkpointing: bool = False,
             galore_rank: Optional[int] = None) -> MemoryEstimate:
    """Peak training memory of one method (bytes per component); `dtype` is --dtype (the weights)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"--dtype {dtype}: expected float32, bfloat16 or float16")
    if optimizer not in ("adamw", "adamw8bit", "paged_adamw8bit"):
        raise ConfigError(f"--optimizer {optimizer}: expected adamw, adamw8bit or paged_adamw8bit")
    for name, v in (("rank", rank), ("batch", batch), ("seq", seq)):
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"--{name} {v}: expected a positive integer")
    wb = 4 if dtype == "float32" else 2
    act = activation_bytes(shape, batch, seq, wb, gradient_checkpointing)
    n = shape.n_params
    if method in ("full", "galore"):
        opt = _adam_bytes(n, wb, optimizer)
        note = ""
        if method == "galore":
            r = galore_rank or rank
            projected = [(o, i) for o, i in shape.projection_shapes()] * shape.layers
            n_proj = sum(o * i for o, i in projected)
            state = sum(2 * r * max(o, i) + r * min(o, i) for o, i in projected)
            opt = _adam_bytes(n - n_proj, wb, optimizer) + state * (wb if optimizer == "adamw" else 1)
            note = f"GaLore rank {r}; full gradients are kept (no per-layer update)"
        return MemoryEstimate(method, n * wb, n, n * wb, opt, act, note)
    a = lora_params(shape, rank, dora=method == "dora")  # float32 factors, their gradients and moments
    real_4bit = method in ("qlora", "cloq")
    if real_4bit:
        q = shape.quantized_params()
        base = _nf4_bytes(q) + (n - q) * 4
        note = "NF4 base (bitsandbytes); CLoQ with --quantizer int is simulated like LoftQ" if method == "cloq" \
            else "NF4 base (bitsandbytes), embeddings/LM head/norms upcast to float32"
    else:
        base = n * wb
        note = {"dora": "plus one layer's full weight norm at a time (transient)",
                "loftq": "simulated quantization: the base is stored de-quantized",
                "irqlora": "simulated quantization: the base is stored de-quantized"}.get(method, "")
    return MemoryEstimate(method, base + a * 4, a, a * 4, _adam_bytes(a, 4, optimizer), act, note)


def estimate_all(shape: LlamaShape, **kw) -> list[MemoryEstimate]:
    return [estimate(m, shape, **kw) for m in METHODS]


def markdown_table(rows: list[MemoryEstimate]) -> str:
    """The README table: GiB per component and in total."""
    head = "| method | weights | trainable params | gradients | optimizer | activations | peak (GiB) | note |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.weights / GIB:.1f} | {r.trainable_params / 1e6:,.1f} M | "
                     f"{r.gradients / GIB:.2f} | {r.optimizer / GIB:.2f} | {r.activations / GIB:.2f} | "
                     f"**{r.total / GIB:.1f}** | {r.note} |")
    return "\n".join(lines)


def as_records(rows: list[MemoryEstimate]) -> list[dict]:
    return [{**asdict(r), "total": r.total} for r in rows]


__all__ = ["LlamaShape", "MemoryEstimate", "estimate", "estimate_all", "markdown_table", "lora_params",
           "activation_bytes", "layer_activation_bytes", "METHODS"]
