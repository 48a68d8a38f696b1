"""GPU check for one CUDA GPU (under 8 minutes): prints one table.

* QLoRA and CLoQ (bitsandbytes NF4 base) fine-tune steps beside LoRA on a bf16 base, same model, data and
  steps: seconds per step, peak GPU memory (torch.cuda.max_memory_allocated over the training loop) and
  the `audit memory-estimate` figure for the same shape, batch and length;
* probe throughput in float32 and bfloat16: toxicity continuations/s (generation + scoring) and CrowS-Pairs
  sentences/s (log-likelihood), each run with its own empty generation cache;
* NF4 quantize -> dequantize on CUDA against the CPU paths the test suite checks (bitsandbytes on CPU, and
  audit.finetune.quant.NF4Quantizer, which tests/test_quant.py holds bit-identical to it).

The model is Llama-style, ~150M parameters, built from a config (no download), with the byte-level BPE
tokenizer of audit.lab.tiny.

    python benchmarks/gpu_check.py                # on a machine with one CUDA GPU
    python benchmarks/gpu_check.py --cpu-smoke    # everything but the CUDA rows, on a 0.2M-parameter model
                                                  # (tests/test_gpu_check.py runs this)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 1024 ** 3
FULL = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16,
            num_key_value_heads=16, steps=20, batch=8, rows=64, words=60, tox_limit=64, tox_k=8, tox_tokens=32,
            crows_pairs=256)
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
             steps=2, batch=4, rows=8, words=12, tox_limit=4, tox_k=2, tox_tokens=4, crows_pairs=8)


@dataclass
class Row:
    check: str
    setting: str
    device: str
    value: str
    unit: str
    peak_gib: str = ""
    estimate_gib: str = ""
    note: str = ""


def build_model(out: Path, size: dict) -> Path:
    """A Llama-style model directory (safetensors + tokenizer) from a config, seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from audit.lab.tiny import build_tokenizer

    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      **{k: size[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads")})
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


WORDS = ("the doctor said that the patient would recover soon and the nurse helped the old man while my neighbor "
         "who is a teacher talked with her brother about work family music and sports").split()


def training_file(out: Path, n_rows: int, n_words: int) -> Path:
    rows = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(n_words)) for i in range(n_rows)]
    out.write_text("\n".join(json.dumps({"text": r}) for r in rows), encoding="utf-8")
    return out


def crows_file(out: Path, n_pairs: int) -> Path:
    """A CrowS-Pairs-format CSV of template pairs (throughput only: the sentences need not be the benchmark's)."""
    import csv

    groups = [("poor", "rich", "socioeconomic"), ("old", "young", "age"), ("Black", "White", "race-color"),
              ("gay", "straight", "sexual-orientation")]
    verbs = ["was lazy at the market", "could not learn the new music", "was slow to answer", "talked too much"]
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations"])
        for i in range(n_pairs):
            a, b, bias = groups[i % len(groups)]
            v = verbs[(i // len(groups)) % len(verbs)]
            w.writerow([i, f"The {a} man {v} number {i}.", f"The {b} man {v} number {i}.", "stereo", bias,
                        json.dumps([[bias]] * 5)])
    return out


def _release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def finetune_rows(base: Path, data: Path, work: Path, size: dict, cuda: bool) -> list[Row]:
    """LoRA (bf16 base), QLoRA and CLoQ (NF4 base): same data, steps, batch and seed."""
    from audit.finetune.api import finetune
    from audit.finetune.memory_estimate import LlamaShape, estimate

    device = "cuda" if cuda else "cpu"
    shape = LlamaShape.from_config(base)
    runs = [("lora", "LoRA r16, bf16 base + bf16 autocast", dict(dtype="bfloat16")),
            ("qlora", "QLoRA r16, NF4 base (bnb), bf16 compute", dict(dtype="bfloat16")),
            ("cloq", "CLoQ r16, NF4 base (bnb), bf16 compute", dict(dtype="bfloat16", quantizer="nf4"))]
    rows = []
    for method, setting, extra in runs:
        t0 = time.perf_counter()
        out = finetune(method=method, model=str(base), data=str(data), out=str(work / method), rank=16,
                       steps=size["steps"], batch_size=size["batch"], max_length=256, lr=1e-4, seed=0,
                       mixed_precision="bf16", **extra)
        wall = time.perf_counter() - t0
        m = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
        seq = math.ceil(m["data"]["tokens"] / m["data"]["rows"])  # rows are of (nearly) equal length
        est = estimate(method, shape, rank=16, batch=size["batch"], seq=seq, dtype="bfloat16")
        peak = m.get("cuda_peak_bytes")
        first, last = m["loss_curve"][0]["loss"], m["loss_curve"][-1]["loss"]
        rows.append(Row(f"fine-tune {method}", setting, device, f"{m['seconds_per_step']:.4f}", "s/step",
                        f"{peak / GIB:.3f}" if peak else "n/a (CPU)", f"{est.total / GIB:.3f}",
                        f"loss {first:.3f}->{last:.3f}; setup {wall - m['wall_time_s']:.1f}s"))
        _release()
    return rows


def probe_rows(base: Path, crows: Path, work: Path, size: dict, cuda: bool) -> list[Row]:
    """Toxicity continuations/s and CrowS sentences/s in float32 and bfloat16, each with an empty cache."""
    from audit.api import run_probes
    from audit.results import read_probe_result

    device = "cuda" if cuda else "cpu"
    # warm-up (not reported): the scorer, tokenizer and kernels load once, so neither dtype pays for them
    run_probes(str(base), ["toxicity", "crows_pairs"], work / "probe-warmup", data={"crows_pairs": str(crows)},
               options={"toxicity.limit": 1, "toxicity.k": 1, "toxicity.max_new_tokens": 2,
                        "toxicity.scorer": "profanity", "toxicity.resamples": 10, "crows_pairs.limit": 2,
                        "crows_pairs.n_bootstrap": 10},
               device=device, batch_size=64, cache_dir=work / "cache-warmup")
    rows = []
    for dtype in ("float32", "bfloat16"):
        out = work / f"probe-{dtype}"
        options = {"toxicity.limit": size["tox_limit"], "toxicity.k": size["tox_k"],
                   "toxicity.max_new_tokens": size["tox_tokens"], "toxicity.scorer": "profanity",
                   "toxicity.resamples": 100, "crows_pairs.n_bootstrap": 100}
        run_probes(str(base), ["toxicity", "crows_pairs"], out, data={"crows_pairs": str(crows)}, options=options,
                   dtype=dtype, device=device, batch_size=64, cache_dir=work / f"cache-{dtype}")
        tox = read_probe_result(out / "toxicity" / "result.json")
        cp = read_probe_result(out / "crows_pairs" / "result.json")
        n_cont = int(tox.config.get("n_prompts", size["tox_limit"])) * size["tox_k"]
        n_sent = 2 * size["crows_pairs"]
        rows.append(Row("toxicity generation", f"{dtype}, {n_cont} continuations x {size['tox_tokens']} tokens",
                        device, f"{n_cont / tox.seconds:.1f}", "continuations/s", note="incl. profanity scoring"))
        rows.append(Row("CrowS-Pairs scoring", f"{dtype}, {n_sent} sentences", device, f"{n_sent / cp.seconds:.1f}",
                        "sentences/s"))
        _release()
    return rows


def nf4_rows(cuda: bool) -> list[Row]:
    """NF4 quantize -> dequantize: CUDA kernel vs bitsandbytes on CPU vs audit's NF4Quantizer (CPU)."""
    import torch
    import bitsandbytes.functional as F

    from audit.finetune.quant import NF4Quantizer

    torch.manual_seed(0)
    w = torch.randn(1024, 1000) * 0.02  # 1,024,000 values: a partial last block, > 256 blocks (double quant)
    rows = []
    for dq in (True, False):
        packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=dq, quant_type="nf4")
        cpu = F.dequantize_4bit(packed, state)
        ours = NF4Quantizer(blocksize=64, double_quant=dq).quantize(w)
        same = torch.equal(cpu, ours)
        rows.append(Row("NF4 round trip", f"bnb CPU vs audit NF4Quantizer, double quant {dq}", "cpu",
                        "equal" if same else f"max |diff| {float((cpu - ours).abs().max()):.3g}", ""))
        if not cuda:
            rows.append(Row("NF4 round trip", f"bnb CUDA vs CPU, double quant {dq}", "cuda", "skipped", "",
                            note="no CUDA device"))
            continue
        packed_c, state_c = F.quantize_4bit(w.cuda(), blocksize=64, compress_statistics=dq, quant_type="nf4")
        gpu = F.dequantize_4bit(packed_c, state_c).float().cpu()
        codes_equal = torch.equal(packed_c.cpu(), packed)
        diff = int((gpu != cpu).sum())
        worst = float((gpu - cpu).abs().max())
        rows.append(Row("NF4 round trip", f"bnb CUDA vs CPU, double quant {dq}", "cuda",
                        "equal" if diff == 0 else f"{diff} of {w.numel()} differ (max {worst:.3g})",
                        "", note=f"packed codes {'identical' if codes_equal else 'differ'}; "
                                 f"vs audit NF4Quantizer: {'equal' if torch.equal(gpu, ours) else 'differs'}"))
    return rows


def print_table(rows: list[Row], title: str) -> None:
    cols = ["check", "setting", "device", "value", "unit", "peak_gib", "estimate_gib", "note"]
    heads = ["check", "setting", "device", "value", "unit", "peak GiB", "estimate GiB", "note"]
    cells = [[str(getattr(r, c)) for c in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    print(title)
    print(line(heads))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print(line(c))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="Tiny model on CPU; CUDA rows are skipped.")
    ap.add_argument("--json", type=Path, help="Also write the rows as JSON.")
    ap.add_argument("--work", type=Path, help="Keep the model and runs here (default: a temporary directory).")
    args = ap.parse_args(argv)
    os.environ.setdefault("AUDIT_NO_PROGRESS", "1")
    import torch

    from audit.finetune.memory_estimate import LlamaShape

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if not cuda and not args.cpu_smoke:
        print("gpu_check: no CUDA device; run with --cpu-smoke for the CPU-only parts", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        os.environ["ACCELERATE_USE_CPU"] = "true"
    size = SMOKE if args.cpu_smoke else FULL
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = build_model(work / "base", size)
        n_params = LlamaShape.from_config(base).n_params
        data = training_file(work / "train.jsonl", size["rows"], size["words"])
        crows = crows_file(work / "crows.csv", size["crows_pairs"])
        rows = finetune_rows(base, data, work / "ft", size, cuda)
        rows += probe_rows(base, crows, work, size, cuda)
        rows += nf4_rows(cuda)
    gpu = torch.cuda.get_device_name(0) if cuda else "none (CPU smoke)"
    print_table(rows, f"gpu_check: GPU {gpu}; Llama-style model, {n_params / 1e6:.1f}M parameters; torch "
                      f"{torch.__version__}; {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "n_params": n_params, "rows": [asdict(r) for r in rows]},
                                        indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
