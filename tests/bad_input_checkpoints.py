"""Bad checkpoints for `tests/test_bad_inputs.py`: copies of a tiny model and a LoRA adapter, each broken in
one way, described with `audit info` command lines (see bad_input_cases.py for the other classes)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from bad_input_cases import Case, _edit_json, _safetensors, _w


# ---------------------------------------------------------------- checkpoints

def checkpoint_cases(ws: Path, lora_dir: Path) -> list[Case]:
    import torch
    from safetensors.torch import load_file, save_file

    c = ws / "ckpt"
    base = ws / "A"

    def model_copy(name: str, edit=None) -> Path:
        d = c / name
        shutil.copytree(base, d)
        if edit is not None:
            sd = load_file(d / "model.safetensors")
            edit(sd)
            save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
        return d

    def adapter_copy(name: str, cfg_edit=None, sd_edit=None) -> Path:
        d = c / name
        shutil.copytree(lora_dir, d)
        _edit_json(d / "adapter_config.json", lambda cfg: cfg.__setitem__("base_model_name_or_path", str(base)))
        if cfg_edit is not None:
            _edit_json(d / "adapter_config.json", cfg_edit)
        if sd_edit is not None:
            sd = load_file(d / "adapter_model.safetensors")
            sd_edit(sd)
            save_file(sd, d / "adapter_model.safetensors")
        return d

    q = "model.layers.0.self_attn.q_proj.weight"
    lora_b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    nocfg = model_copy("no-config")
    (nocfg / "config.json").unlink()
    badcfg = model_copy("bad-config")
    _w(badcfg / "config.json", "{oops")
    noweights = model_copy("no-weights")
    (noweights / "model.safetensors").unlink()
    pickled = model_copy("pickle-only")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    truncated = model_copy("truncated")
    blob = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    header_list = model_copy("header-list")
    _safetensors(header_list / "model.safetensors", [1, 2, 3])
    header_junk = model_copy("header-junk")
    (header_junk / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"abcde")
    notok = model_copy("no-tokenizer")
    for f in notok.glob("tokenizer*"):
        f.unlink()
    ad_bin = adapter_copy("adapter-bin")
    (ad_bin / "adapter_model.safetensors").rename(ad_bin / "adapter_model.bin")
    ad_badcfg = adapter_copy("adapter-bad-config")
    _w(ad_badcfg / "adapter_config.json", "[1]")
    ad_nobase = adapter_copy("adapter-no-base", lambda cfg: cfg.__setitem__("base_model_name_or_path",
                                                                            str(ws / "nosuch-base")))
    checkpoints = {
        "no-such-path": (ws / "nosuch-model", "nosuch-model", False),
        "path-is-file": (ws / "data" / "train.jsonl", "train.jsonl", False),
        "no-config": (nocfg, "no-config", False),
        "config-invalid-json": (badcfg, "config.json", False),
        "no-weights": (noweights, "no-weights", True),
        "pickle-without-allow": (pickled, "pytorch_model.bin", True),
        "truncated-safetensors": (truncated, "model.safetensors", True),
        "header-not-object": (header_list, "model.safetensors", True),
        "header-not-json": (header_junk, "model.safetensors", True),
        "no-tokenizer": (notok, "no-tokenizer", True),
        "missing-tensor": (model_copy("missing-tensor", lambda sd: sd.pop(q)), q, True),
        "shape-mismatch": (model_copy("shape", lambda sd: sd.__setitem__(q, torch.zeros(64, 32))), q, True),
        "dtype-mismatch": (model_copy("dtype", lambda sd: sd.__setitem__(q, torch.zeros(64, 64, dtype=torch.int64))),
                           q, True),
        "adapter-unknown-peft-type": (adapter_copy("peft-type", lambda cfg: cfg.__setitem__("peft_type", "BOGUS")),
                                      "peft_type", True),
        "adapter-target-names-no-layer": (adapter_copy("targets", lambda cfg: cfg.__setitem__(
            "target_modules", ["q_proj", "nosuch_proj"])), "nosuch_proj", True),
        "adapter-missing-tensor": (adapter_copy("lora-missing", sd_edit=lambda sd: sd.pop(lora_b)), "lora_B", True),
        "adapter-shape-mismatch": (adapter_copy("lora-shape", sd_edit=lambda sd: sd.__setitem__(
            lora_b, torch.zeros(64, 3))), "lora_B", True),
        "adapter-bin-without-allow": (ad_bin, "adapter_model.bin", True),
        "adapter-config-not-object": (ad_badcfg, "adapter_config.json", True),
        "adapter-base-missing": (ad_nobase, "nosuch-base", True),
        "adapter-r-not-int": (adapter_copy("r-str", lambda cfg: cfg.__setitem__("r", "four")), "'r'", True),
        "manifest-quantization-string": (adapter_copy("quant-str"), "quantization", True),
        "manifest-loader-os-system": (adapter_copy("loader-os"), "loader", True),
        "manifest-loader-not-a-loader": (adapter_copy("loader-cli"), "loader", True),
        "manifest-loader-not-string": (adapter_copy("loader-int"), "loader", True),
    }
    manifest = {"method": "lora", "rank": 4, "config": {}, "audit_version": "0"}
    for name, extra in (("quant-str", {"quantization": "nf4"}), ("loader-os", {"loader": "os:system"}),
                        ("loader-cli", {"loader": "audit.cli:main"}), ("loader-int", {"loader": 7})):
        _w(c / name / "manifest.json", json.dumps({**manifest, **extra}))
    return [Case("checkpoints", name, ("info", str(path)), names, loads_model=slow)
            for name, (path, names, slow) in checkpoints.items()]
