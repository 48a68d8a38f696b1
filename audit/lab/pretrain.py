"""Pre-train a small GPT-2-style model from scratch on the planted corpus.

Why from scratch: a model that has only ever seen our world has exactly the behaviour we planted, at
the strength we planted it, so every later number can be compared with a known truth.

The loop is deliberately plain (AdamW, linear warm-up then cosine decay, one sentence per row, loss on
every real token). The tokenizer is a byte-level BPE trained on the corpus (`audit.lab.tiny.build_tokenizer`),
so every probe string stays encodable. The result is a normal Hugging Face directory (safetensors) plus
`pretrain.json` recording the config, the corpus hash and the loss curve; a directory whose record
matches the requested config is reused instead of retrained.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..lm.tokens import pad_batch, pad_id, start_id

RECORD = "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    hidden: int = 192
    layers: int = 4
    heads: int = 4
    vocab_size: int = 1024
    max_positions: int = 128
    steps: int = 1200
    batch_size: int = 32
    lr: float = 2e-3
    dropout: float = 0.0  # GPT-2's default 0.1 slows a tiny model's learning of context (it stayed bigram-like)
    warmup: int = 60
    weight_decay: float = 0.01
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def is_done(out_dir: Path, corpus_path: Path, cfg: PretrainConfig) -> bool:
    """True when `out_dir` holds a finished pre-training of this corpus with this config."""
    rec = Path(out_dir) / RECORD
    if not rec.is_file() or not (Path(out_dir) / "model.safetensors").is_file():
        return False
    try:
        data = json.loads(rec.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return data.get("config") == cfg.as_dict() and data.get("corpus_sha256") == _sha256(corpus_path)


def pretrain(corpus_path: str | Path, out_dir: str | Path, cfg: PretrainConfig = PretrainConfig(),
             log=None) -> dict:
    """Train and save; returns the record written to `out_dir/pretrain.json`. Reuses a finished run."""
    import torch
    from transformers import AutoModelForCausalLM

    from .. import progress
    from ..results import write_json_atomic
    from .tiny import build_tokenizer, tiny_config

    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    if is_done(out_dir, corpus_path, cfg):
        return json.loads((out_dir / RECORD).read_text(encoding="utf-8"))
    texts = [t for t in corpus_path.read_text(encoding="utf-8").splitlines() if t.strip()]
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(texts, vocab_size=cfg.vocab_size)
    eos = tokenizer.eos_token_id
    bos = start_id(tokenizer)
    # <bos> sentence <eos>: the probes score and generate after a BOS token (`audit.lm.loglik`).
    encoded = [[bos] + ids[: cfg.max_positions - 2] + [eos]
               for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    model_cfg = tiny_config("gpt2", vocab_size=len(tokenizer), hidden=cfg.hidden, layers=cfg.layers,
                            heads=cfg.heads, max_positions=cfg.max_positions, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=eos)
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(model_cfg, name, cfg.dropout)
    model = AutoModelForCausalLM.from_config(model_cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    losses: list[tuple[int, float]] = []
    t0 = time.time()
    running = None
    with progress.bar("pre-training", cfg.steps, unit="steps") as advance:
        for step in range(cfg.steps):
            if len(order) < cfg.batch_size:
                order += torch.randperm(len(encoded), generator=gen).tolist()
            batch_ids, order = order[: cfg.batch_size], order[cfg.batch_size:]
            batch = [encoded[i] for i in batch_ids]
            ids, mask = pad_batch(batch, pad_id(tokenizer))
            labels, _ = pad_batch(batch, -100)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            if step % 25 == 0 or step == cfg.steps - 1:
                losses.append((step, round(running, 4)))
                if log is not None and (step % max(25, cfg.steps // 8) == 0 or step == cfg.steps - 1):
                    log(f"pre-training step {step + 1}/{cfg.steps}: loss {running:.3f}")
            advance()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    record = {"config": cfg.as_dict(), "corpus": str(corpus_path.resolve()), "corpus_sha256": _sha256(corpus_path),
              "sentences": len(texts), "tokens": sum(len(e) for e in encoded),
              "parameters": sum(p.numel() for p in model.parameters()), "final_loss": losses[-1][1],
              "loss_curve": losses, "seconds": round(time.time() - t0, 1)}
    write_json_atomic(out_dir / RECORD, record)
    return record
