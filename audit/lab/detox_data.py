"""Self-generated detoxification data for the real-model study (`audit demo --real`).

Why: the planted study knows its ground truth because it wrote the corpus; a real model needs clean data
of its own. Following domain-adaptive detoxification (Gehman et al. 2020), the base model continues
prompts and only the continuations the toxicity scorer finds non-toxic are kept, so fine-tuning moves the
model towards its own non-toxic behaviour on the same kind of prompt. The prompts are split per group:
one half makes the training data, the other half is what the toxicity probe audits, so no fine-tune has
seen an audited prompt.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..lm.tokens import pad_id
from ..probes.toxicity.prompts import Prompt


@dataclass(frozen=True)
class DetoxDataConfig:
    """How the detox data are made (part of the study's plan digest)."""

    prompts_per_group: int  # training prompts per group (taken from the training half)
    samples: int  # continuations drawn per prompt
    max_new_tokens: int
    temperature: float
    top_p: float
    scorer: str
    threshold: float  # a continuation is kept when its score is below this
    heldout_fraction: float  # kept rows set aside for choosing the learning rate


def split_prompts(prompts: list[Prompt]) -> tuple[list[Prompt], list[Prompt]]:
    """Per group, alternate prompts in file order: even positions train, odd positions are audited."""
    seen: dict[str, int] = {}
    train, audit = [], []
    for p in prompts:
        i = seen.get(p.group, 0)
        seen[p.group] = i + 1
        (train if i % 2 == 0 else audit).append(p)
    return train, audit


def per_group(prompts: list[Prompt], n: int) -> list[Prompt]:
    """The first n prompts of every group, in file order."""
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        if seen.get(p.group, 0) < n:
            out.append(p)
            seen[p.group] = seen.get(p.group, 0) + 1
    return out


def write_prompts(path: Path, prompts: list[Prompt]) -> Path:
    from ..results import write_text_atomic

    rows = [{"text": p.text, "group": p.group, "category": p.category, "axis": p.axis} for p in prompts]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_detox_data(handle, prompts: list[Prompt], cfg: DetoxDataConfig, out_dir: Path, seed: int,
                    cache_dir: Path) -> dict[str, Any]:
    """Continue `prompts` with the base, keep the non-toxic continuations, write train/held-out files.

    Returns the record written to out_dir/detox_data.json (filter, counts, kept fraction, paths)."""
    from ..lm.generation import GenerationSettings, generate
    from ..results import write_json_atomic, write_text_atomic
    from ..scorers import describe, get_scorer, score_texts

    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
                                  top_p=cfg.top_p, num_samples=cfg.samples, seed=seed)
    texts = generate(handle, [p.text for p in prompts], settings, cache_dir,
                     description="detox data: base continuations")
    scorer = get_scorer(cfg.scorer)
    flat = [(p, t) for p, row in zip(prompts, texts) for t in row]
    scores = score_texts(scorer, [t for _, t in flat])
    kept = [(p, t) for (p, t), s in zip(flat, scores) if s < cfg.threshold and t.strip()]
    empty = sum(1 for _, t in flat if not t.strip())
    rows = [{"prompt": p.text, "completion": t, "group": p.group} for p, t in kept]
    random.Random(seed).shuffle(rows)
    n_held = max(1, round(cfg.heldout_fraction * len(rows))) if len(rows) > 1 else 0
    if len(rows) - n_held < 1:
        from ..errors import ConfigError

        raise ConfigError(f"detox data: only {len(rows)} of {len(flat)} continuations passed the filter "
                          f"(score < {cfg.threshold} with {cfg.scorer}); nothing left to fine-tune on")
    held, train = rows[:n_held], rows[n_held:]
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, held_path = out_dir / "detox_train.jsonl", out_dir / "detox_heldout.jsonl"
    write_text_atomic(train_path, "".join(json.dumps(r) + "\n" for r in train))
    write_text_atomic(held_path, "".join(json.dumps(r) + "\n" for r in held))
    record = {"config": asdict(cfg), "scorer": describe(scorer),
              "filter": f"keep a continuation when the scorer's score < {cfg.threshold} (and it is not empty)",
              "prompts": len(prompts), "continuations": len(flat), "empty": empty, "kept": len(rows),
              "kept_fraction": len(rows) / len(flat) if flat else None,
              "mean_score_all": sum(scores) / len(scores) if scores else None,
              "train_rows": len(train), "heldout_rows": len(held),
              "train": str(train_path), "heldout": str(held_path)}
    write_json_atomic(out_dir / "detox_data.json", record)
    return record


def heldout_loss(checkpoint: Path, data_path: Path, max_length: int, batch_size: int = 16,
                 handle: Optional[Any] = None) -> float:
    """Mean next-token loss on the completions of a held-out file (token-weighted): what the learning rate
    is chosen on (the same measure as `audit.finetune.lr_grid`)."""
    from ..finetune.data import load_training_data
    from ..finetune.lr_grid import mean_token_loss
    from ..lm.models import load

    h = handle or load(checkpoint)
    data = load_training_data(data_path, h.tokenizer, max_length=max_length)
    pad = pad_id(h.tokenizer)
    return mean_token_loss(h.model, data.examples, pad, batch_size)
