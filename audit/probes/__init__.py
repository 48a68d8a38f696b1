"""Probes: each one is a module with a `run(ctx: ProbeContext) -> ProbeResult` function and a frozen options
dataclass (audit.probes.options).

Adding a probe touches its own module, its options class, and one line in `PROBES` and `OPTIONS`. Modules
are imported lazily so the CLI starts fast; `probe_spec(name)` / `registry()` give the `ProbeSpec`s.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

from ..errors import ConfigError
from .spec import ProbeSpec

# name -> "module:function". `rl:<env>` names are routed to the "rl" probe with options["env"] = <env>.
PROBES: dict[str, str] = {
    "toxicity": "audit.probes.toxicity.probe:run",
    "crows_pairs": "audit.probes.crows_pairs:run",
    "bbq": "audit.probes.bbq.probe:run",
    "counterfactual": "audit.probes.counterfactual:run",
    "decisions": "audit.probes.decisions:run",
    "shift": "audit.probes.shift.probe:run",
    "honest": "audit.probes.honest:run",
    "rl": "audit.rl.probe:run",
}

# name -> "module:OptionsClass" (light modules: reading options imports no model code)
OPTIONS: dict[str, str] = {
    "toxicity": "audit.probes.toxicity.options:ToxicityOptions",
    "crows_pairs": "audit.probes.crows_pairs_options:CrowsPairsOptions",
    "bbq": "audit.probes.bbq.options:BBQOptions",
    "counterfactual": "audit.probes.counterfactual_options:CounterfactualOptions",
    "decisions": "audit.probes.decisions_options:DecisionsOptions",
    "shift": "audit.probes.shift.options:ShiftOptions",
    "honest": "audit.probes.honest.options:HonestOptions",
    "rl": "audit.rl.options:RLOptions",
}

SUMMARIES: dict[str, str] = {
    "toxicity": "continue prompts k times and score the continuations' toxicity (RealToxicityPrompts metrics)",
    "crows_pairs": "CrowS-Pairs: does the model prefer the more stereotypical sentence of a minimal pair",
    "bbq": "BBQ: bias in multiple-choice question answering, by log-likelihood",
    "counterfactual": "the same templates with only the social group changed: likelihood and toxicity gaps",
    "decisions": "yes/no decisions over tabular records: group fairness of the decisions (Fairlearn)",
    "shift": "how far fine-tuning moved the next-token distribution, where, and against a reference",
    "honest": "HONEST: hurtful sentence completions about identities (HurtLex)",
    "rl": "the model as a policy in a fairness environment (rl:<env>: lending, admission, attention)",
}

# name -> the `--data KEY=PATH` keys the probe reads
DATA_KEYS: dict[str, tuple[str, ...]] = {
    "toxicity": ("toxicity",), "crows_pairs": ("crows_pairs",), "bbq": ("bbq",),
    "counterfactual": ("counterfactual",), "decisions": ("decisions",), "shift": ("finetune",),
    "honest": ("honest", "hurtlex"), "rl": (),
}

T = TypeVar("T")


def _import(path: str) -> Any:
    mod, attr = path.split(":")
    return getattr(importlib.import_module(mod), attr)


def options_class(name: str) -> type:
    """The options dataclass of a probe (name without an `rl:` argument)."""
    if name not in PROBES:
        raise ConfigError(f"--probes {name}: unknown probe; expected one of {', '.join(sorted(PROBES))} (rl:<env>)")
    if name not in OPTIONS:  # a probe registered without its own options takes only the shared ones
        from .options import ProbeOptions

        return ProbeOptions
    return _import(OPTIONS[name])


def _metric_specs(run_path: str) -> tuple:
    """The probe's METRIC_SPECS (declared by its module or package); () where none is declared yet."""
    mod = importlib.import_module(run_path.split(":")[0])
    specs = getattr(mod, "METRIC_SPECS", None)
    if specs is None and "." in mod.__name__:
        specs = getattr(importlib.import_module(mod.__name__.rsplit(".", 1)[0]), "METRIC_SPECS", None)
    return tuple(specs or ())


def probe_spec(name: str) -> ProbeSpec:
    """The registry entry of one probe: options class, metric declarations, run function."""
    cls = options_class(name)
    return ProbeSpec(name=name, options=cls, metrics=_metric_specs(PROBES[name]), run=PROBES[name],
                     summary=SUMMARIES.get(name, ""), data_keys=DATA_KEYS.get(name, ()))


def registry() -> dict[str, ProbeSpec]:
    """name -> ProbeSpec for every probe (imports every probe module: for listings and docs)."""
    return {name: probe_spec(name) for name in PROBES}


@dataclass
class ProbeContext:
    """Everything a probe needs. `model` is the checkpoint under audit; `base` is a separately loaded
    base model (None when the checkpoint is an adapter: use `model.base_model()`, one copy in memory)."""

    model: Any  # audit.lm.models.ModelHandle
    out_dir: Path  # RUN_DIR/<probe>/, created by the runner
    base: Any = None  # Optional[ModelHandle]
    reference: Any = None  # Optional[ModelHandle], e.g. full FT for the shift probe
    data: dict[str, str] = field(default_factory=dict)  # data key -> local path
    options: dict[str, Any] = field(default_factory=dict)  # loose options, read only when `opts` is None
    seed: int = 0
    batch_size: int = 32
    cache_dir: Path = Path(".audit-cache")
    label: Optional[str] = None
    opts: Any = None  # the probe's typed options (audit.probes.options), parsed before any model loaded
    sample_record: Any = None  # set by `sample()`: what --limit did (audit.probes.sampling.SampleRecord)
    _read: Any = field(default=None, repr=False)  # the options `options_as` read last

    def options_as(self, cls: type) -> Any:
        """The typed options: `opts` when the runner parsed them, else `options` read now (tests, notebooks)."""
        if isinstance(self.opts, cls):
            self._read = self.opts
        else:
            from .options import parse_options

            self._read = parse_options(cls, dict(self.options), probe=cls.PROBE, seed=self.seed)
        return self._read

    def sample(self, items: Sequence[T], strata: Callable[[T], tuple], levels: Sequence[str] = ()) -> list[T]:
        """The probe's items under `limit` (seeded, stratified by `strata`); recorded for the result."""
        from .sampling import stratified_sample

        opts = self._read if self._read is not None else self.opts
        chosen, self.sample_record = stratified_sample(items, getattr(opts, "limit", None),
                                                       getattr(opts, "run_seed", self.seed), strata, levels)
        return chosen

    def has_base(self) -> bool:
        return self.base is not None or bool(getattr(self.model, "is_adapter", False))

    @contextlib.contextmanager
    def base_for_scoring(self) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) of the base for paired comparisons: the separately loaded base if given,
        else the adapter-disabled checkpoint (one copy in memory). Check `has_base()` first."""
        if self.base is not None:
            yield self.base.model, self.base.tokenizer
        else:
            with self.model.base_model() as m:
                yield m, self.model.tokenizer


def split_probe_name(name: str) -> tuple[str, dict[str, Any]]:
    """'rl:lending' -> ('rl', {'env': 'lending'}); plain names pass through."""
    if ":" in name:
        head, arg = name.split(":", 1)
        if head == "rl":
            return "rl", {"env": arg}
        raise ConfigError(f"--probes {name}: only rl:<env> takes an argument")
    return name, {}


def get_probe(name: str) -> Callable:
    if name not in PROBES:
        raise ConfigError(f"--probes {name}: unknown probe; expected one of {', '.join(sorted(PROBES))} (rl:<env>)")
    mod, fn = PROBES[name].split(":")
    return getattr(importlib.import_module(mod), fn)
