"""GaLore (Zhao et al., ICML 2024): full-weight training whose Adam moments live in a rank-r projection
of each 2-D weight's gradient (galore_torch.GaLoreAdamW), refreshed by SVD every `update_proj_gap` steps.

Projected: the 2-D weights of the attention and MLP projections (nn.Linear and GPT-2 Conv1D alike; the
same layers LoRA would adapt). Everything else (embeddings, LM head, norms, biases) gets plain AdamW
inside the same optimizer. The checkpoint is a full model directory.

Resumable: a training checkpoint stores the optimizer state with each GaLore projector object turned into
plain tensors and numbers (`portable_optimizer_state`), rebuilt on resume (`restore_optimizer_state`).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import FinetuneConfig
from .full import FullFinetune
from .targets import resolve_targets

PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")


def _portable(state: Any) -> Any:
    """Optimizer state with GaLore projector objects turned into plain dicts (weights_only can load it).

    No strings inside: torch's Optimizer.load_state_dict rebuilds every iterable value element-wise,
    which turns a string into the text of a generator, so proj_type travels as an index.
    """
    if type(state).__name__ == "GaLoreProjector":
        fields = {k: _portable(v) for k, v in vars(state).items() if k != "proj_type"}
        return {"__galore_projector__": True, "proj_type_index": PROJ_TYPES.index(state.proj_type), **fields}
    if isinstance(state, dict):
        return {k: _portable(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_portable(v) for v in state]
    return state


def _restore_projectors(opt) -> None:
    from galore_torch.galore_projector import GaLoreProjector

    for param, st in opt.state.items():
        proj = st.get("projector") if isinstance(st, dict) else None
        if isinstance(proj, dict) and proj.get("__galore_projector__"):
            p = GaLoreProjector(proj["rank"], verbose=proj.get("verbose", False),
                                update_proj_gap=proj["update_proj_gap"], scale=proj["scale"],
                                proj_type=PROJ_TYPES[int(proj["proj_type_index"])])
            ortho = proj.get("ortho_matrix")
            move = (lambda t: t.to(param.device) if t is not None else None)
            p.ortho_matrix = [move(t) for t in ortho] if isinstance(ortho, list) else move(ortho)
            st["projector"] = p


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

    def portable_optimizer_state(self, state: dict[str, Any]) -> dict[str, Any]:
        return _portable(state)

    def restore_optimizer_state(self, optimizer) -> None:
        _restore_projectors(optimizer)
