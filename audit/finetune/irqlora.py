"""IR-QLoRA (Qin et al., ICML 2024): information-retaining quantized LoRA (METHODS.md §3).

* **ICQ** (Information Calibration Quantization): per NF4 block of 64 weights, shift by tau before
  quantizing, W_hat = dequant_NF4(q(W - tau)) + tau, with tau = median + lambda * absmax(W - median)
  chosen on a grid lambda in linspace(-tau_range*sigma, tau_range*sigma, 2*tau_n + 1) (sigma =
  1/Phi^-1(0.9677083)) to maximise the entropy of the block's 16-level code histogram. tau is stored
  double-quantized like the reference (8-bit dynamic map, one float scale per 256 blocks). We add
  tau = 0 (plain NF4) as the first candidate and move only on a strict entropy gain, so ICQ never
  retains less information than NF4 (the reference's grid does not contain tau = 0). The search solves,
  per weight and level boundary, where along the tau grid the weight changes code, and evaluates the
  float32 encoding only next to that point: bit-identical to encoding every block once per candidate
  (`icq_search_loop`, kept as the test reference) at a fraction of the cost.
* **IEC** (Information Elastic Connection): two learnable scalars per layer (init 0),
      z = A x + beta_A * GroupMean_r(x),    y = B z + beta_B * Repeat(z)
  GroupMean_r averages x in r consecutive groups of in/r features; Repeat gives output chunk j
  (out/r features) the value z_j. Both are fixed linear maps G (r x in) and P (out x r), so the layer
  equals standard LoRA with A' = A + beta_A G and B' = B + beta_B P: that is what we save, a plain PEFT
  adapter on OUT/quantized_base/ (the ICQ weights, de-quantized), loadable without this package.
"""

from __future__ import annotations

import math
from functools import lru_cache

from ..errors import ConfigError
from .quant import NF4_OFFSET, NF4Quantizer, blockwise_decode, blockwise_encode, dynamic_code, nf4_code
from .quantized_lora import QuantizedLoRAMethod

TAU_GROUP = 256  # blocks sharing one float scale for the 8-bit tau codes (reference: blocksize2)


def nf4_sigma() -> float:
    """1 / Phi^-1(0.9677083): the standard deviation that maps the outermost NF4 level to 1."""
    import torch

    return float(1.0 / torch.special.ndtri(torch.tensor(NF4_OFFSET, dtype=torch.float32).double()))


# ------------------------------------------------------------------ ICQ

def block_entropy(codes, levels: int = 16):
    """Shannon entropy (bits) of the code histogram of each row of `codes` (n_blocks x blocksize)."""
    import torch

    counts = torch.zeros(codes.shape[0], levels, dtype=torch.float64, device=codes.device)
    counts.scatter_add_(1, codes.long(), torch.ones_like(codes, dtype=torch.float64))
    return entropy_of_counts(counts, codes.shape[1])


def entropy_of_counts(counts, n: int):
    """Shannon entropy (bits) of each row of a float64 histogram `counts` (... x levels) of n values."""
    import torch

    p = counts / n
    return -(torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))).sum(dim=-1)


def _blocks(weight, blocksize: int):
    if weight.numel() % blocksize:
        raise ConfigError(f"irqlora: a weight of shape {tuple(weight.shape)} has {weight.numel()} elements, not a "
                          f"multiple of the NF4 block size {blocksize}")
    return weight.reshape(-1, blocksize).float()


def _codes_with_shift(blocks, tau, blocksize: int):
    codes, absmax = blockwise_encode((blocks - tau[:, None]).reshape(-1), nf4_code(blocks.device), blocksize)
    return codes.reshape(blocks.shape), absmax


def icq_search(weight, tau_range: float = 0.1, tau_n: int = 100, blocksize: int = 64):
    """Per-block entropy-maximising shift. Returns (tau per block, entropy of plain NF4, entropy with tau).

    Same result, bit for bit, as `icq_search_loop` (which encodes every weight once per candidate tau), but
    without encoding every weight 2*tau_n + 1 times: see `_grid_at_most`. Blocks where that shortcut does
    not apply (constant blocks, a zero-width grid) take the direct route, `_sorted_block_entropy`.
    """
    import torch

    blocks, tau0, absmax0, factors = _search_setup(weight, tau_range, tau_n, blocksize)
    ordered = blocks.sort(dim=1).values
    mids = _nf4_midpoints(blocks.device)
    plain = _sorted_block_entropy(ordered, torch.zeros_like(tau0)[None], mids)[0]
    taus = torch.stack([float(f) * absmax0 + tau0 for f in factors])  # candidates x blocks, as the loop has them
    step = (factors[-1] - factors[0]) / (len(factors) - 1) if len(factors) > 1 else 1.0
    entropy = torch.empty(taus.shape, dtype=torch.float64, device=blocks.device)
    direct = (absmax0 == 0) if step > 0 else torch.ones_like(absmax0, dtype=torch.bool)
    fast = (~direct).nonzero().flatten()
    for start in range(0, fast.numel(), _BLOCK_CHUNK):
        idx = fast[start:start + _BLOCK_CHUNK]
        at_most = _grid_at_most(ordered[idx], taus[:, idx], tau0[idx], absmax0[idx], factors[0], step, mids)
        entropy[:, idx] = _entropy_from_at_most(at_most, blocksize)
    slow = direct.nonzero().flatten()
    chunk = max(1, _CHUNK_ELEMENTS // max(1, slow.numel() * blocksize))
    for start in range(0, taus.shape[0] if slow.numel() else 0, chunk):
        entropy[start:start + chunk, slow] = _sorted_block_entropy(ordered[slow], taus[start:start + chunk, slow],
                                                                   mids)
    # the loop keeps a candidate only on a strict gain: the first maximum of [plain, candidates...] wins
    pick = torch.cat([plain[None], entropy]).argmax(dim=0)  # argmax returns the first maximal index
    best = torch.where(pick == 0, plain, entropy.gather(0, (pick - 1).clamp(min=0)[None])[0])
    best_tau = torch.where(pick == 0, torch.zeros_like(tau0), taus.gather(0, (pick - 1).clamp(min=0)[None])[0])
    return best_tau, plain, best


_BLOCK_CHUNK = 1024
_UNIT = 2.0 ** -24  # float32 unit roundoff


def _grid_at_most(ordered, taus, tau0, absmax0, first: float, step: float, mids):
    """#(code <= k) for every candidate j, block b and level midpoint k: (candidates x blocks x 15) int64.

    Why this is exact and fast. For one block, weight x and midpoint m, x gets a code <= k under shift tau
    iff (x - tau) / A(tau) <= m, with A(tau) = max(x_max - tau, tau - x_min). In real arithmetic that holds
    iff tau >= tau*(x, m), solved in closed form (A is linear on each side of the mid-range), and the grid
    tau_j = first*absmax0 + tau0 + j*step*absmax0 is increasing in j: so x counts for every candidate
    j >= j*. Float32 rounding (in s = x - tau, 1/A and the product) can move that boundary by far less
    than `delta` candidates (bound below), so candidates farther than delta from j* are certain, and the
    few within it are evaluated with exactly `blockwise_encode`'s float32 arithmetic.
    """
    import torch

    n_cand = taus.shape[0]
    x = ordered.double()
    x_min, x_max = x[:, :1, None], x[:, -1:, None]  # blocks x 1 x 1
    m = mids.double()[None, :, None]  # 1 x 15 x 1
    xs = x[:, None, :]  # blocks x 1 x blocksize
    centre = (x_max + x_min) / 2
    below = xs <= centre + m * (x_max - centre)  # the boundary lies where A = x_max - tau
    tau_star = torch.where(below, (xs - m * x_max) / (1 - m), (xs + m * x_min) / (1 + m))
    a0, t0 = absmax0.double()[:, None, None], tau0.double()[:, None, None]
    j_star = ((tau_star - t0) / a0 - first) / step
    # Margin in candidates: |f - exact| <= ~8 units in the last place of |scaled| <= 1, i.e. 8u*A <= 2e-6*a0
    # in x, over the boundary's slope in tau (>= 1 - max|m|); tau_j itself is off its line by <= 2u(a0+|t0|).
    slope = 1 - float(mids.abs().max())
    delta = (2e-6 * a0 / slope + 2 * _UNIT * (a0 + t0.abs())) / (a0 * abs(step)) + 0.01
    lo = torch.floor(j_star - delta).add_(1).clamp_(0, n_cand).long()  # first uncertain candidate
    hi = torch.ceil(j_star + delta).clamp_(0, n_cand).long()  # first certainly counted candidate
    n_blocks, n_mid, size = lo.shape
    counted = torch.zeros(n_cand + 1, n_blocks, n_mid, dtype=torch.int32, device=x.device)  # counts <= 64
    hi_first = hi.permute(2, 0, 1)
    counted.scatter_add_(0, hi_first, torch.ones(hi_first.shape, dtype=torch.int32, device=x.device))
    at_most = counted.cumsum(0, dtype=torch.int32)[:n_cand]  # candidates x blocks x midpoints
    width = (hi - lo).clamp_(min=0).flatten()
    uncertain = width.nonzero().flatten()  # few: weights whose code change lies within delta of a candidate
    if uncertain.numel():
        width = width[uncertain]
        cell = torch.repeat_interleave(uncertain, width)
        first_j = torch.repeat_interleave(lo.flatten()[uncertain], width)
        offset = torch.arange(cell.numel(), device=x.device) - torch.repeat_interleave(width.cumsum(0) - width, width)
        j = first_j + offset
        b, k, i = cell // (n_mid * size), (cell // size) % n_mid, cell % size
        tau = taus[j, b]
        absmax = torch.maximum((ordered[b, 0] - tau).abs(), (ordered[b, -1] - tau).abs())
        scaled = (ordered[b, i] - tau) * (1.0 / absmax.clamp(min=1e-38))
        hit = (scaled <= mids[k]).to(torch.int32)
        at_most.index_put_((j, b, k), hit, accumulate=True)
    return at_most


def _entropy_from_at_most(at_most, n: int):
    """Entropy per leading index from cumulative counts #(code <= k), k = 0..14 (last dim). A count is one
    of 0..n, so each p*log2(p) term is looked up in a table made by `entropy_of_counts`' own formula."""
    import torch

    counts = torch.diff(at_most, dim=-1, prepend=torch.zeros_like(at_most[..., :1]),
                        append=torch.full_like(at_most[..., :1], n))
    p = torch.arange(n + 1, dtype=torch.float64, device=at_most.device) / n
    table = torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))
    return -table[counts.long()].sum(dim=-1)


_CHUNK_ELEMENTS = 1 << 22  # candidates x weights scaled at once (16 MB of float32)


def _nf4_midpoints(device):
    code = nf4_code(device)
    return (code[:-1] + code[1:]) / 2


def _search_setup(weight, tau_range: float, tau_n: int, blocksize: int):
    """Blocks, the per-block median and absmax around it, and the grid of lambda factors (float64)."""
    import numpy as np

    if tau_n < 0 or tau_range < 0:
        raise ConfigError(f"irqlora_tau_n {tau_n} / irqlora_tau_range {tau_range}: expected non-negative values")
    blocks = _blocks(weight, blocksize)
    tau0 = blocks.median(dim=1).values
    absmax0 = (blocks - tau0[:, None]).abs().max(dim=1).values
    sigma = nf4_sigma()
    return blocks, tau0, absmax0, np.linspace(-tau_range * sigma, tau_range * sigma, 2 * tau_n + 1)


def _sorted_block_entropy(ordered, tau, mids):
    """Code-histogram entropy of every block (rows of `ordered`, sorted ascending) shifted by every row of
    `tau` (candidates x blocks). Same arithmetic as `blockwise_encode`: s = W - tau, scaled = s * (1/absmax);
    absmax comes from the two ends (subtraction is monotone); the clamp to [-1, 1] cannot move a value across
    a midpoint, so it is skipped. Code of a value = number of midpoints below it (bucketize), hence
    #(code <= k) = #(scaled <= midpoint k)."""
    import torch

    shifted = ordered.unsqueeze(0) - tau.unsqueeze(-1)  # candidates x blocks x blocksize
    absmax = torch.maximum(shifted[..., 0].abs(), shifted[..., -1].abs())
    scaled = shifted.mul_((1.0 / absmax.clamp(min=1e-38)).unsqueeze(-1))
    rows = scaled.reshape(-1, ordered.shape[1])
    at_most = torch.searchsorted(rows, mids.expand(rows.shape[0], -1).contiguous(), right=True)
    return _entropy_from_at_most(at_most, ordered.shape[1]).reshape(tau.shape)


def icq_search_loop(weight, tau_range: float = 0.1, tau_n: int = 100, blocksize: int = 64):
    """The reference version of `icq_search`: encode all weights once per candidate (slow; kept for tests)."""
    import torch

    blocks, tau0, absmax, factors = _search_setup(weight, tau_range, tau_n, blocksize)
    codes, _ = _codes_with_shift(blocks, torch.zeros(blocks.shape[0], device=blocks.device), blocksize)
    plain = block_entropy(codes)
    best, best_tau = plain.clone(), torch.zeros(blocks.shape[0], device=blocks.device)
    for factor in factors:
        tau = float(factor) * absmax + tau0
        codes, _ = _codes_with_shift(blocks, tau, blocksize)
        entropy = block_entropy(codes)
        better = entropy > best
        best = torch.where(better, entropy, best)
        best_tau = torch.where(better, tau, best_tau)
    return best_tau, plain, best


def quantize_tau(tau, group: int = TAU_GROUP):
    """tau as stored: 8-bit dynamic-map code of tau / max|tau| per group of `group` blocks."""
    dyn = dynamic_code(tau.device)
    codes, scale = blockwise_encode(tau, dyn, group)
    return blockwise_decode(codes, scale, dyn, group)


def icq_dequantize(weight, tau, nf4: NF4Quantizer, tau_group: int = TAU_GROUP):
    """W_hat = dequant_NF4(q(W - tau)) + tau_hat per block (tau = 0 gives exactly plain NF4)."""
    blocks = _blocks(weight, nf4.blocksize)
    shifted = (blocks - tau[:, None]).reshape(weight.shape)
    deq = nf4.quantize(shifted).reshape(blocks.shape)
    return (deq + quantize_tau(tau, tau_group)[:, None]).reshape(weight.shape)


def icq_quantize(weight, tau_range: float = 0.1, tau_n: int = 100, nf4: NF4Quantizer | None = None):
    """ICQ for one out x in weight: (W_hat, info with mean entropies and the share of shifted blocks)."""
    nf4 = nf4 or NF4Quantizer()
    tau, plain, best = icq_search(weight, tau_range, tau_n, nf4.blocksize)
    w_hat = icq_dequantize(weight, tau, nf4)
    info = {"entropy_nf4": float(plain.mean()), "entropy_icq": float(best.mean()),
            "blocks_shifted": float((tau != 0).double().mean())}
    return w_hat, info


# ------------------------------------------------------------------ IEC

def group_mean_matrix(rank: int, n_in: int, dtype=None, device=None):
    """G (r x in): row j averages inputs j*in/r ... (j+1)*in/r - 1."""
    import torch

    g = n_in // rank
    return torch.repeat_interleave(torch.eye(rank, dtype=dtype, device=device), g, dim=1) / g


def repeat_matrix(rank: int, n_out: int, dtype=None, device=None):
    """P (out x r): output o receives z_{o // (out/r)}."""
    import torch

    return torch.repeat_interleave(torch.eye(rank, dtype=dtype, device=device), n_out // rank, dim=0)


@lru_cache(maxsize=None)
def _elastic_classes():
    """The IEC module classes, defined once on first use (torch is imported lazily in this package)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ElasticA(nn.Linear):
        """lora_A with IEC: A dropout(x) + beta * GroupMean_r(x) (the mean sees x before dropout, as in
        the reference, so the layer's own dropout moves in here)."""

        def forward(self, x):
            z = F.linear(self.iec_dropout(x), self.weight)
            groups = x.reshape(*x.shape[:-1], self.out_features, -1).mean(dim=-1)
            return z + self.iec_beta.to(z.dtype) * groups.to(z.dtype)

        def folded_weight(self):
            return self.weight + self.iec_beta * group_mean_matrix(self.out_features, self.in_features,
                                                                   self.weight.dtype, self.weight.device)

    class ElasticB(nn.Linear):
        """lora_B with IEC: B z + beta * Repeat(z)."""

        def forward(self, z):
            y = F.linear(z, self.weight)
            y = y.reshape(*z.shape[:-1], self.in_features, -1) + self.iec_beta.to(y.dtype) * z.unsqueeze(-1)
            return y.reshape(*z.shape[:-1], self.out_features)

        def folded_weight(self):
            return self.weight + self.iec_beta * repeat_matrix(self.in_features, self.out_features,
                                                               self.weight.dtype, self.weight.device)

    return ElasticA, ElasticB, torch


def add_elastic_connections(layer, name: str = "", adapter: str = "default") -> None:
    """Turn one PEFT LoRA layer's A and B into their IEC versions (betas 0: the output is unchanged)."""
    import torch.nn as nn

    ElasticA, ElasticB, torch = _elastic_classes()
    lora_a, lora_b = layer.lora_A[adapter], layer.lora_B[adapter]
    r, n_in, n_out = lora_a.out_features, lora_a.in_features, lora_b.out_features
    if n_in % r or n_out % r:
        g = math.gcd(n_in, n_out)
        raise ConfigError(f"irqlora: layer {name}: rank {r} must divide its input size {n_in} and output size "
                          f"{n_out} (the elastic connections average in/r inputs and repeat each of the r "
                          f"outputs out/r times); choose a rank dividing {g}")
    for module, cls in ((lora_a, ElasticA), (lora_b, ElasticB)):
        module.__class__ = cls
        module.iec_beta = nn.Parameter(torch.zeros(1, dtype=module.weight.dtype, device=module.weight.device))
    lora_a.iec_dropout = layer.lora_dropout[adapter]
    layer.lora_dropout[adapter] = nn.Identity()


def folded_factors(layer, adapter: str = "default"):
    """(A', B') = (A + beta_A G, B + beta_B P): the plain LoRA factors with the same forward."""
    return layer.lora_A[adapter].folded_weight().detach(), layer.lora_B[adapter].folded_weight().detach()


class IRQLoRA(QuantizedLoRAMethod):
    name = "irqlora"

    def quantizer(self, cfg):
        if str(cfg.quantizer).lower() != "nf4" or cfg.bits != 4:
            raise ConfigError(f"irqlora: quantizer {cfg.quantizer!r} with {cfg.bits} bits; IR-QLoRA's ICQ is "
                              f"built on 4-bit NF4 (use quantizer 'nf4', bits 4)")
        return NF4Quantizer(blocksize=cfg.group_size, double_quant=True)

    def init_layer(self, name, weight, cfg, scaling, quantizer):
        w_hat, info = icq_quantize(weight, cfg.irqlora_tau_range, cfg.irqlora_tau_n, quantizer)
        return self.rounded(w_hat), None, None, info

    def after_peft(self, peft_model, cfg) -> None:
        from .quantized_lora import lora_layers

        for name, layer in lora_layers(peft_model).items():
            add_elastic_connections(layer, name)
        for n, p in peft_model.named_parameters():
            if "iec_beta" in n:
                p.requires_grad_(True)
        self.record["quantization"].update({"icq": {"tau_range": cfg.irqlora_tau_range, "tau_n": cfg.irqlora_tau_n,
                                                    "tau_storage": "8-bit dynamic map, float scale per 256 blocks",
                                                    "extra_candidate": "tau = 0 (plain NF4)"}})
        self.record["iec"] = {"saved_as": "standard LoRA factors with the elastic connections folded in "
                                          "(A' = A + beta_A G, B' = B + beta_B P)"}

    def adapter_state(self, model) -> dict:
        """The model's state with A' = A + beta_A G and B' = B + beta_B P in place of A, B and no betas."""
        from .quantized_lora import lora_layers

        state = {k: v for k, v in model.state_dict().items() if "iec_beta" not in k}
        betas: dict[str, list] = {}
        for name, layer in lora_layers(model).items():
            a, b = folded_factors(layer)
            for key, value in ((f"base_model.model.{name}.lora_A.default.weight", a),
                               (f"base_model.model.{name}.lora_B.default.weight", b)):
                if key not in state:
                    raise KeyError(f"irqlora: expected {key} in the model state")
                state[key] = value
            betas[name] = [float(layer.lora_A["default"].iec_beta.detach()),
                           float(layer.lora_B["default"].iec_beta.detach())]
        self.record["iec"]["betas"] = betas
        return state
