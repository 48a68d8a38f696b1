"""GaLore (Zhao et al., ICML 2024): full-weight training whose Adam moments live in a rank-r projection
of each 2-D weight's gradient (galore_torch.GaLoreAdamW), refreshed by SVD every `update_proj_gap` steps.

Projected: the 2-D weights of the attention and MLP projections (nn.Linear and GPT-2 Conv1D alike; the
same layers LoRA would adapt). Everything else (embeddings, LM head, norms, biases) gets plain AdamW
inside the same optimizer. The checkpoint is a full model directory.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import FinetuneConfig
from .full import FullFinetune
from .targets import resolve_targets
from .train import PROJ_TYPES


def galore_param_groups(model, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """[{'params': rest}, {'params': projected 2-D weights, 'rank', 'update_proj_gap', 'scale', 'proj_type'}]."""
    if cfg.galore_proj_type not in PROJ_TYPES:
        raise ConfigError(f"galore_proj_type {cfg.galore_proj_type!r}: expected one of {', '.join(PROJ_TYPES)}")
    rank = int(cfg.galore_rank or cfg.rank)
    if rank < 1:
        raise ConfigError(f"galore_rank {rank}: expected a positive integer")
    targets = set(resolve_targets(model, cfg.target_modules))
    projected, projected_ids = [], set()
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and getattr(module, "weight", None) is not None \
                and module.weight.dim() == 2 and module.weight.requires_grad:
            projected.append(module.weight)
            projected_ids.add(id(module.weight))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in projected_ids]
    return [{"params": rest},
            {"params": projected, "rank": rank, "update_proj_gap": int(cfg.galore_update_proj_gap),
             "scale": float(cfg.galore_scale), "proj_type": cfg.galore_proj_type}]


class GaLore(FullFinetune):
    name = "galore"
    low_rank = False

    def optimizer(self, model, cfg: FinetuneConfig):
        from galore_torch import GaLoreAdamW, GaLoreAdamW8bit

        if cfg.optimizer != "adamw":  # GaLore's own 8-bit variant (bitsandbytes), as in the paper's 7B run
            return GaLoreAdamW8bit(galore_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   is_paged=cfg.optimizer == "paged_adamw8bit")
        return GaLoreAdamW(galore_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay,
                           no_deprecation_warning=True)
