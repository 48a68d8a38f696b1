"""CLoQ (Deng et al., 2025): calibrated LoRA initialisation for quantized LLMs (METHODS.md §2).

Per target layer, with W the full-precision weight, Q = quant(W) and X the layer's calibration inputs,
the LoRA factors start at the closed-form minimiser of

    || X (Q + A B^T - W) ||_F   over rank(A B^T) <= r        (input-major notation: y = x W, W is in x out)

Solution: H = X^T X + lambda I (lambda = 0.01 mean diag H), R^T R = H (Cholesky, float64),
R dW = U S V^T (dW = W - Q), A B^T = R^{-1} U_r S_r V_r^T; its error is sqrt(sum_{i>r} S_i^2).
Any R with R^T R = H gives the same product (R = O R0 with O orthogonal), so Cholesky + one SVD
suffices. We split the product evenly (A = R^{-1} U_r S_r^1/2, B = V_r S_r^1/2) and give each PEFT
factor 1/sqrt(alpha/r), so PEFT's scaling * lora_B @ lora_A equals (A B^T)^T exactly.

Then it trains as QLoRA: frozen base Q, only LoRA trainable.
* NF4: the base is the original checkpoint loaded by bitsandbytes with the settings `audit.lm.models` uses
  (nf4 + double quant); Q is read back from those 4-bit weights, so a 4-bit reload is the same Q.
* INT2/3/4: simulated quantization, the de-quantized base saved in OUT/quantized_base/.
Calibration inputs come from the full-precision model (the paper's X W target).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from .base import FinetuneConfig
from .quantized_lora import QuantizedLoRAMethod, lora_layers, set_lora_factors, split_for_peft

DAMP = 0.01


def damped(gram, damp: float = DAMP):
    """H + lambda I with lambda = damp * mean(diag H) (GPTQ convention); identity if H is all zero."""
    import torch

    h = gram.to(torch.float64)
    lam = float(damp * torch.diagonal(h).mean())
    if not lam > 0:  # a layer that saw no signal: fall back to the data-free (plain SVD) fit
        lam = 1.0
    return h + lam * torch.eye(h.shape[0], dtype=torch.float64, device=h.device)


def whitening_factor(h):
    """An R with R^T R = h and a function applying R^{-1}: Cholesky when h is positive definite,
    otherwise the eigendecomposition with a least-squares inverse (h singular even after damping)."""
    import torch

    L, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        R = L.T

        def solve(y):
            return torch.linalg.solve_triangular(R, y, upper=True)

        return R, solve
    evals, evecs = torch.linalg.eigh(h)
    evals = evals.clamp(min=0)
    R = torch.sqrt(evals)[:, None] * evecs.T

    def solve(y):
        return torch.linalg.lstsq(R, y).solution

    return R, solve


def cloq_factors(weight, quantized, gram, rank: int, damp: float = DAMP):
    """Closed-form CLoQ factors for one layer.

    weight, quantized: out x in (nn.Linear orientation); gram: in x in (H = X^T X of the layer input).
    Returns (A: in x r, B: out x r, info) with A B^T the optimal rank-r correction of W - Q in CLoQ's
    input-major notation (so the out x in correction is B A^T), all float64.
    """
    import torch

    dW = (weight.to(torch.float64) - quantized.to(torch.float64)).T  # in x out
    h = damped(gram.to(dW.device), damp) if damp > 0 else gram.to(dW.device, torch.float64)
    R, solve_R = whitening_factor(h)
    U, S, Vh = torch.linalg.svd(R @ dW, full_matrices=False)
    r = min(rank, S.numel())
    root = torch.sqrt(S[:r])
    A = solve_R(U[:, :r] * root)
    B = Vh[:r].T * root
    if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
        A = torch.linalg.lstsq(R, U[:, :r] * root).solution
    if r < rank:  # a rank above min(in, out) adds nothing: zero columns
        A = torch.cat([A, A.new_zeros(A.shape[0], rank - r)], dim=1)
        B = torch.cat([B, B.new_zeros(B.shape[0], rank - r)], dim=1)
    info = {"residual": float(torch.sqrt((S[r:] ** 2).sum())), "before": float(torch.linalg.norm(S)),
            "damping": float(torch.diagonal(h - gram.to(h.device, torch.float64)).mean())}
    return A, B, info


def weighted_error(weight, quantized, correction, gram) -> float:
    """|| X (Q + correction - W)^T ||_F via H: sqrt(tr(E H E^T)) with E = Q + correction - W (out x in)."""
    import torch

    E = (quantized.to(torch.float64) + correction.to(torch.float64) - weight.to(torch.float64))
    return float(torch.sqrt(torch.clamp(torch.einsum("oi,ij,oj->", E, gram.to(torch.float64), E), min=0)))


def cloq_lora(weight, quantized, gram, rank: int, scaling: float, damp: float = DAMP):
    """(lora_A r x in, lora_B out x r, info) for PEFT, so that scaling * lora_B @ lora_A = B A^T."""
    A, B, info = cloq_factors(weight, quantized, gram, rank, damp)
    lora_a, lora_b = split_for_peft(B, A.T, scaling)
    return lora_a.float(), lora_b.float(), info


class CLoQ(QuantizedLoRAMethod):
    name = "cloq"

    def __init__(self):
        super().__init__()
        self.gram: dict[str, Any] = {}

    def prepare(self, model, tokenizer, cfg, targets, calibration_texts) -> None:
        from .calibration import collect_gram, linear_layers

        if not calibration_texts:
            raise ConfigError("cloq: no calibration texts (the training data's first --calibration-samples rows "
                              "are used); set calibration_samples >= 1")
        names = list(linear_layers(model, targets))
        stats = collect_gram(model, tokenizer, list(calibration_texts), names, max_length=cfg.max_length,
                             batch_size=cfg.batch_size)
        self.gram = stats.gram
        self.calibration = {"n_texts": stats.n_texts, "n_tokens": stats.n_tokens, "damp": DAMP,
                            "activations": "full-precision model"}

    def init_layer(self, name, weight, cfg, scaling, quantizer):
        q = self.rounded(quantizer.quantize(weight))
        lora_a, lora_b, info = cloq_lora(weight, q, self.gram[name], cfg.rank, scaling)
        return q, lora_a.to(weight.device), lora_b.to(weight.device), info

    def build(self, base_dir: Path, cfg: FinetuneConfig, calibration_texts: Optional[list[str]] = None):
        from .quant import effective_quantizer_name

        if effective_quantizer_name(cfg) == "nf4":
            if cfg.bits != 4:
                raise ConfigError(f"bits {cfg.bits}: nf4 is 4-bit only; use quantizer 'int' for 2 or 3 bits")
            if cfg.group_size != 64:
                raise ConfigError(f"group_size {cfg.group_size}: the bitsandbytes NF4 path uses blocks of 64")
            model = self._build_nf4(Path(base_dir), cfg, calibration_texts)
        else:
            model = super().build(base_dir, cfg, calibration_texts)
            self.record["calibration"] = self.calibration
        self.gram = {}
        return model

    def _build_nf4(self, base_dir: Path, cfg: FinetuneConfig, calibration_texts):
        """Calibrate on the full-precision model, then initialise LoRA against bitsandbytes' own Q."""
        import bitsandbytes.functional as bnbF
        import torch
        from peft import get_peft_model

        from .calibration import linear_layers, weight_out_in
        from .lora import make_lora_config
        from .qlora import load_nf4_base, nf4_quantization_record
        from .quantized_lora import load_base
        from .targets import resolve_targets

        fp_model, tok = load_base(base_dir, cfg)
        targets = resolve_targets(fp_model, cfg.target_modules)
        self.prepare(fp_model, tok, cfg, targets, calibration_texts)
        fp_weights = {n: weight_out_in(m).detach().float().cpu() for n, m in linear_layers(fp_model, targets).items()}
        del fp_model

        model = load_nf4_base(base_dir, cfg)
        model = get_peft_model(model, make_lora_config(model, cfg, targets=targets))
        layers = lora_layers(model)
        scaling = cfg.lora_scaling
        stats = {}
        for name, w in fp_weights.items():
            base_layer = layers[name].get_base_layer()
            q4 = base_layer.weight
            q = bnbF.dequantize_4bit(q4.data, q4.quant_state).float().cpu()
            if q.shape != w.shape:
                raise ConfigError(f"cloq: layer {name}: 4-bit weight shape {tuple(q.shape)} does not match "
                                  f"{tuple(w.shape)}")
            lora_a, lora_b, info = cloq_lora(w, q, self.gram[name], cfg.rank, scaling)
            set_lora_factors(layers[name], lora_a, lora_b)
            stats[name] = info
        record = nf4_quantization_record(cfg)
        record.update({"quantizer": "nf4", "simulated": False})
        self.record = {"quantization": record, "calibration": self.calibration,
                       "initialisation": {"method": self.name, "layers": stats}}
        self._nf4 = True
        torch.manual_seed(cfg.seed)
        return model

    def save(self, model, tokenizer, out_dir: Path, cfg: FinetuneConfig) -> dict[str, Any]:
        if getattr(self, "_nf4", False):
            from .lora import save_adapter

            extras = save_adapter(model, tokenizer, out_dir, cfg)
            extras.update(self.record)
            return extras
        return super().save(model, tokenizer, out_dir, cfg)
