"""Watch-list mass after each prompt (probability on the first tokens of a word list, toxic by default) and
the logit lens per layer (KL to the final layer, watch mass) for each side."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .sides import Side, batches, encode
from ...errors import CheckpointError
from ...lm.tokens import pad_id as padding_id
from ...metrics.divergence import kl, probability_mass
from ...metrics.stats import bootstrap_ci, paired_bootstrap_diff
from ...results import Metric


def prompt_pass(side: Side, tokenizer, prompts: list[str], token_ids: list[int], max_length: int,
                batch_size: int, lens: bool, warnings: list[str]) -> tuple[Optional[list[dict]], np.ndarray]:
    """Per layer (lens) KL to the final layer and watch mass, averaged over prompts; and the per-prompt
    watch mass of the model's own next-token distribution after each prompt."""
    import torch

    from .lens import find_lens_parts, run_lens

    encoded = encode(tokenizer, prompts, max_length, keep="end")
    pad = padding_id(tokenizer)
    mass = np.full(len(prompts), np.nan)
    layer_kl: Optional[np.ndarray] = None
    layer_mass: Optional[np.ndarray] = None
    parts = None
    if lens:
        try:
            parts = find_lens_parts(side.model)
        except CheckpointError as exc:
            warnings.append(f"shift: {side.name}: {exc}; logit lens skipped")
    n_done = 0
    with side.context():
        for idx, ids, mask in batches(encoded, batch_size, pad):
            last = mask.sum(1) - 1
            ids, mask = ids.to(side.device), mask.to(side.device)
            if parts is not None:
                try:
                    out = run_lens(side.model, ids, mask, positions=last, parts=parts)
                except CheckpointError as exc:
                    warnings.append(f"shift: {side.name}: {exc}; logit lens skipped")
                    parts = None
                else:
                    final = out.final_logits
                    kls = torch.stack([kl(final, lg) for lg in out.layer_logits]).double()  # [layers+1, rows]
                    masses = torch.stack([probability_mass(lg, token_ids) for lg in out.layer_logits]).double()
                    layer_kl = kls.sum(1).cpu().numpy() + (layer_kl if layer_kl is not None else 0.0)
                    layer_mass = masses.sum(1).cpu().numpy() + (layer_mass if layer_mass is not None else 0.0)
                    n_done += len(idx)
                    mass[idx] = probability_mass(final, token_ids).cpu().numpy()
                    continue
            with torch.inference_mode():
                logits = side.model(input_ids=ids, attention_mask=mask).logits
            rows = torch.arange(len(idx), device=logits.device)
            mass[idx] = probability_mass(logits[rows, last.to(logits.device)], token_ids).cpu().numpy()
    rows_out = None
    if parts is not None and layer_kl is not None and n_done == len([e for e in encoded if e]):
        rows_out = [{"model": side.name, "layer": layer, "kl_to_final": float(layer_kl[layer] / n_done),
                     "watch_mass": float(layer_mass[layer] / n_done), "n_prompts": n_done}
                    for layer in range(len(layer_kl))]
    return rows_out, mass


def watch_metrics(watch_mass: dict[str, np.ndarray], seed: int, n_resamples: int) -> dict[str, Metric]:
    """Mean watch-list mass per model over prompts, and the paired change tuned - base."""
    out = {f"watch_mass_{name}": bootstrap_ci(mass[~np.isnan(mass)], seed=seed, n_resamples=n_resamples)
           for name, mass in watch_mass.items()}
    ok = ~np.isnan(watch_mass["base"]) & ~np.isnan(watch_mass["tuned"])
    if ok.any():
        out["watch_mass_change"] = paired_bootstrap_diff(watch_mass["tuned"][ok], watch_mass["base"][ok],
                                                         seed=seed, n_resamples=n_resamples)
    return out
