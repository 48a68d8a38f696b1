"""`finetune()`: the Python entry point behind `audit finetune`, notebooks, the demo and the RL area.

    from audit.finetune.api import finetune
    finetune(method="lora", model="base/", data="train.jsonl", out="runs/lora", rank=8, steps=100)
    finetune(method="lora", model="base/", data="train.jsonl", out="runs/sweep", rank=[1, 4, 16])
        # -> runs/sweep/r1, runs/sweep/r4, runs/sweep/r16 (+ runs/sweep/sweep.json)

Repeated calls on the same base and data reuse the tokenizer and the tokenised data (cached in this
process, keyed by file identity), so a sweep pays for them once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from ..errors import ConfigError, file_error
from ..results import write_json_atomic
from .base import FinetuneConfig

RankSpec = Union[int, str, Iterable[int]]
_TOKENIZERS: dict[tuple, Any] = {}
_DATA: dict[tuple, Any] = {}
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(FinetuneConfig))


def parse_ranks(rank: RankSpec) -> list[int]:
    """8 -> [8]; "1,4,16" -> [1, 4, 16]; [1, 4] -> [1, 4]. Duplicates removed, order kept."""
    if isinstance(rank, bool):
        raise ConfigError(f"rank {rank!r}: expected a positive integer or a list like 1,4,16")
    if isinstance(rank, int):
        items: list[Any] = [rank]
    elif isinstance(rank, str):
        items = [p.strip() for p in rank.split(",") if p.strip()]
    else:
        items = list(rank)
    ranks: list[int] = []
    for item in items:
        try:
            r = int(item)
            if r != float(item):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"rank {rank!r}: {item!r} is not an integer; expected e.g. 8 or 1,4,16,64") from None
        if r < 1:
            raise ConfigError(f"rank {rank!r}: {r} is not positive; expected e.g. 8 or 1,4,16,64")
        if r not in ranks:
            ranks.append(r)
    if not ranks:
        raise ConfigError(f"rank {rank!r}: no rank given; expected e.g. 8 or 1,4,16,64")
    return ranks


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Fields from a YAML (or JSON) run config; keys are FinetuneConfig field names, unknown keys refused."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise file_error(path, "config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise file_error(path, "not UTF-8 text; expected a YAML run config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise file_error(path, f"invalid YAML ({getattr(exc, 'problem', None) or exc})",
                         line=mark.line + 1 if mark else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise file_error(path, f"expected a mapping of field: value, got {type(data).__name__}")
    for key in data:
        if key not in FIELD_NAMES:
            import difflib

            close = difflib.get_close_matches(str(key), FIELD_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise file_error(path, f"unknown key{hint}; expected one of {', '.join(FIELD_NAMES)}", field=str(key))
    return data


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def cached_tokenizer(base_dir: Path):
    from ..lm.models import TOKENIZER_FILES, load_tokenizer

    files = [base_dir / f for f in TOKENIZER_FILES + ("tokenizer_config.json",) if (base_dir / f).exists()]
    key = (str(base_dir.resolve()), *(_file_key(f) for f in files))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(base_dir)
    return _TOKENIZERS[key]


def cached_training_data(path: Path, tokenizer, max_length: int):
    from .data import load_training_data

    key = (_file_key(path) if path.exists() else (str(path),), id(tokenizer), max_length)
    if key not in _DATA:
        _DATA[key] = load_training_data(path, tokenizer, max_length)
    return _DATA[key]


def finetune(cfg: Optional[FinetuneConfig] = None, *, tokenizer=None, training_data=None,
             on_step: Optional[Callable[[int, float], None]] = None, **fields) -> Path:
    """Fine-tune and return the output directory (for a rank sweep, the parent of out/r<rank>).

    `cfg` and/or keyword fields (FinetuneConfig names; keywords override cfg). `rank` may be a list or
    "1,4,16" for a sweep. `tokenizer` / `training_data` (a data.TrainingData) skip loading them again.
    """
    from ..lm.models import resolve_checkpoint
    from .train import config_from, train, validate_config

    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"unknown fine-tuning field(s) {', '.join(unknown)}; expected some of "
                          f"{', '.join(FIELD_NAMES)}")
    base = cfg.to_dict() if cfg is not None else {}
    merged = {**base, **fields}
    rank_spec = merged.get("rank", 8)
    ranks = parse_ranks(rank_spec)
    is_sweep = isinstance(rank_spec, (list, tuple, set, range)) or (isinstance(rank_spec, str) and "," in rank_spec)
    merged["rank"] = ranks[0]
    for key in ("data", "out", "model"):
        if isinstance(merged.get(key), Path):
            merged[key] = str(merged[key])
    if isinstance(merged.get("target_modules"), str):
        merged["target_modules"] = [t.strip() for t in merged["target_modules"].split(",") if t.strip()]
    from .lr_grid import parse_lr_grid, train_with_lr_grid, validate_grid_config

    merged["lr_grid"] = parse_lr_grid(merged.get("lr_grid"))
    config = config_from(**merged)
    validate_config(config)  # before loading anything: a typo costs nothing
    validate_grid_config(config)

    base_dir = resolve_checkpoint(config.model, what="base model")
    tok = tokenizer if tokenizer is not None else cached_tokenizer(base_dir)
    data = training_data if training_data is not None else cached_training_data(Path(config.data), tok,
                                                                                 config.max_length)
    from .registry import get_method

    def train_one(c: FinetuneConfig) -> Path:
        if c.lr_grid:  # one rate per (method, rank), chosen by held-out loss
            return train_with_lr_grid(c, tokenizer=tok, data=data, method_factory=lambda: get_method(c.method),
                                      on_step=on_step)
        return train(c, tokenizer=tok, data=data, method=get_method(c.method), on_step=on_step)

    if not is_sweep:
        return train_one(config)

    if config.method == "full":
        raise ConfigError(f"rank {','.join(map(str, ranks))}: full fine-tuning has no rank to sweep; "
                          f"use a low-rank method (lora, dora, qlora, ...) or galore")
    out = Path(config.out)
    runs = []
    for r in ranks:
        sub = dataclasses.replace(config, rank=r, out=str(out / f"r{r}"))
        train_one(sub)
        runs.append({"rank": r, "out": f"r{r}"})
    write_json_atomic(out / "sweep.json", {"method": config.method, "ranks": ranks, "runs": runs,
                                           "config": config.to_dict()})
    return out
