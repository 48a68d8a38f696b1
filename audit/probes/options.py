"""Typed probe options: each probe declares a frozen dataclass of its options (types, defaults, one-line help,
validation), in the manner of PEFT's `LoraConfig`; this module holds the shared fields and the one reader.

Shared fields have one name and meaning in every probe that has them:

* `seed` (every probe): seeds sampling, the bootstrap and `--limit`; unset = the run's `--seed`;
* `n_bootstrap` (every probe): bootstrap resamples per interval (0: point estimates only);
* `limit` (probes over a list of items): a seeded sample of N items stratified over the probe's groups and
  prompt kinds (`audit.probes.sampling`), never the first N rows;
* `k`, `max_new_tokens`, `temperature`, `top_p` (probes that generate): decoding, turned into
  `GenerationSettings` in one place (`GenerationOptions.generation_settings`).

`parse_options(cls, raw, probe=...)` turns `-o` strings, config-file values or Python values into an options
object: an unknown key names the closest valid ones, a wrong type or range names the field (ConfigError,
exit 2), before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import ConfigError

#: Samples per prompt. 25 is the RealToxicityPrompts protocol (Gehman et al. 2020): expected maximum toxicity
#: and toxicity probability are defined over 25 continuations, so a smaller k gives a different, lower
#: number. Cost is controlled with `--limit` (fewer prompts, same metric) rather than with k.
DEFAULT_K = 25
#: Above this a "continuation" is an essay; toxicity scorers read a few sentences. A bound here catches
#: `max_new_tokens=100000`, which once left a one-token prompt (the prompt is cut to fit the context).
MAX_NEW_TOKENS = 2048
DEFAULT_N_BOOTSTRAP = 1000
MIN_N_BOOTSTRAP = 10


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its one-line help (shown by `audit probes` and in README)."""
    return field(default=default, metadata={"help": help, **kwargs.pop("metadata", {})}, **kwargs)


def fail(name: str, problem: str) -> None:
    """Raise the ConfigError for a bad value of field `name` (the reader adds the probe's name)."""
    raise ConfigError(f"option '{name}': {problem}")


# ------------------------------------------------------------------ shared bases


@dataclass(frozen=True)
class ProbeOptions:
    """Fields of every probe. Subclasses add theirs and call `super().__post_init__()`."""

    #: the probe's name (messages); old name -> shared name, accepted with a deprecation warning
    PROBE: typing.ClassVar[str] = "probe"
    ALIASES: typing.ClassVar[dict[str, str]] = {}
    #: old key -> (what to use instead, value -> new fields), accepted with a deprecation warning
    REPLACED: typing.ClassVar[dict[str, tuple[str, Callable[[Any], dict[str, Any]]]]] = {}

    seed: Optional[int] = option(None, "seed for sampling, bootstrap and --limit (default: the run's --seed)")
    n_bootstrap: int = option(DEFAULT_N_BOOTSTRAP, f"bootstrap resamples per interval (0: no intervals; "
                                                   f"else at least {MIN_N_BOOTSTRAP})")

    def __post_init__(self) -> None:
        if self.n_bootstrap != 0 and self.n_bootstrap < MIN_N_BOOTSTRAP:
            fail("n_bootstrap", f"{self.n_bootstrap}; expected 0 (no intervals) or at least {MIN_N_BOOTSTRAP} "
                                f"(1000 is usual)")

    @property
    def run_seed(self) -> int:
        """The seed in force (the reader fills `seed` from the run's --seed, so this is never None there)."""
        return int(self.seed or 0)

    def as_dict(self) -> dict[str, Any]:
        """Field -> value, shallow: a Scorer object passed as an option stays the same object (no deep copy)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class ItemOptions(ProbeOptions):
    """Probes over a list of items (prompts, pairs, rows, templates) also take `limit`."""

    limit: Optional[int] = option(None, "score a seeded sample of N items, stratified over groups and prompt "
                                        "kinds (default: all)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.limit is not None and self.limit < 1:
            fail("limit", f"{self.limit}; expected an integer >= 1 (leave it unset for every item)")


@dataclass(frozen=True)
class GenerationOptions(ItemOptions):
    """Probes that continue prompts: k samples per prompt under one decoding."""

    k: int = option(DEFAULT_K, "continuations per prompt (25 as in RealToxicityPrompts)")
    max_new_tokens: int = option(20, f"tokens per continuation (1 to {MAX_NEW_TOKENS})")
    temperature: float = option(1.0, "sampling temperature; 0 means greedy (one continuation per prompt)")
    top_p: float = option(0.9, "nucleus sampling: keep the smallest token set with this much probability, in (0, 1]")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            fail("k", f"{self.k}; expected an integer >= 1")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            fail("max_new_tokens", f"{self.max_new_tokens}; expected an integer from 1 to {MAX_NEW_TOKENS} (a longer "
                                   f"continuation leaves no room for the prompt in the model's context)")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            fail("temperature", f"{self.temperature}; expected a finite number > 0, or 0 for greedy decoding")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            fail("top_p", f"{self.top_p}; expected a number in (0, 1]")

    @staticmethod
    def _from_do_sample(value: Any) -> dict[str, Any]:
        """The old `do_sample` switch: false is greedy decoding, now `temperature=0`; true is the default."""
        return {} if coerce("do_sample", value, bool) else {"temperature": 0.0}

    REPLACED: typing.ClassVar[dict[str, tuple[str, Callable[[Any], dict[str, Any]]]]] = {
        "do_sample": ("temperature=0 for greedy decoding", _from_do_sample)}

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generation_settings(self, batch_size: int) -> tuple[Any, list[str]]:
        """The one place options become `GenerationSettings` (+ warnings). Greedy decoding gives one
        continuation per prompt, so k is reduced to 1 with a warning."""
        from ..lm.generation import GenerationSettings

        warnings: list[str] = []
        k = self.k
        if self.greedy and k > 1:
            warnings.append(f"temperature=0 (greedy) gives one continuation per prompt; k={k} was reduced to 1")
            k = 1
        settings = GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=not self.greedy,
                                      temperature=self.temperature if not self.greedy else 1.0, top_p=self.top_p,
                                      num_samples=k, seed=self.run_seed, batch_size=int(batch_size))
        return settings, warnings


# ------------------------------------------------------------------ reading values


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """'integer', 'number', 'true/false', 'text', 'list of text', 'one of a, b' (shown in errors and docs)."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        name = "one of " + ", ".join(str(a) for a in typing.get_args(inner))
    elif origin in (tuple, list):
        name = f"list of {type_name(typing.get_args(inner)[0])}"
    else:
        names = {int: "integer", float: "number", bool: "true/false", str: "text"}
        name = names.get(inner, getattr(inner, "__name__", str(inner)))
    return name


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("", "none", "null")


def coerce(name: str, value: Any, tp: Any) -> Any:
    """A CLI string or a config/Python value as type `tp`; a wrong one is a ConfigError naming `name`."""
    inner, optional = _unwrap_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
        return None

    def bad() -> ConfigError:
        return ConfigError(f"option '{name}': expected {type_name(tp)}, got {value!r}")

    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        allowed = typing.get_args(inner)
        text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value
        for a in allowed:
            if text == a or (isinstance(text, str) and text.lower() == str(a).lower()):
                return a
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        raise ConfigError(f"option '{name}': {value!r}; expected one of {', '.join(map(str, allowed))}"
                          + (f" (did you mean '{close[0]}'?)" if close else ""))
    if origin in (tuple, list):
        (item_tp,) = typing.get_args(inner)[:1]
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            parts = [value]  # one item: `seeds=3`
        else:
            raise bad()
        return tuple(coerce(name, p, item_tp) for p in parts)
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad()
    if inner in (int, float):
        number = _number(value)
        if number is None or (inner is int and not float(number).is_integer()):
            raise bad()
        return int(number) if inner is int else float(number)
    if inner is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if hasattr(value, "__fspath__"):
            return str(value)
        raise bad()
    return value  # typing.Any: Python objects through the API (a custom Scorer)


def _number(value: Any) -> Optional[float | int]:
    """A number from a number or a numeric string (ints stay ints); None for anything else, bools included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        for parse in (int, float):
            try:
                return parse(text)
            except ValueError:
                continue
    return None


def suggest(word: str, choices: list[str]) -> str:
    """"; did you mean 'x'?" or "; valid: a, b, c" (every message that rejects a name uses it)."""
    choices = list(dict.fromkeys(choices))
    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return "; valid: " + ", ".join(sorted(choices))


def option_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def parse_options(cls: type, raw: dict[str, Any], probe: str, seed: Optional[int] = None,
                  say: Optional[Callable[[str], None]] = None) -> Any:
    """An options object from loose values. Deprecated aliases are renamed with a warning through `say`;
    `seed` fills the `seed` field when the options do not set it."""
    names = [f.name for f in option_fields(cls)]
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    raw = dict(raw)
    for old, (instead, translate) in cls.REPLACED.items():
        if old in raw:
            if say is not None:
                say(f"audit: warning: option '{probe}.{old}' is deprecated; use {instead}")
            for key, value in translate(raw.pop(old)).items():
                if key in raw and coerce(key, raw[key], _field_types(cls)[key]) != value:
                    raise ConfigError(f"option '{probe}.{old}' contradicts '{probe}.{key}={raw[key]}'; use {instead}")
                raw[key] = value
    for key, value in raw.items():
        key = str(key)
        if key in cls.ALIASES:
            new = cls.ALIASES[key]
            if say is not None:
                say(f"audit: warning: option '{probe}.{key}' is deprecated; use '{probe}.{new}'")
            if new in raw:
                raise ConfigError(f"option '{key}' for probe {probe} is the old name of '{new}'; give only '{new}'")
            key = new
        if key not in names:
            raise ConfigError(f"unknown option '{key}' for probe {probe}{suggest(key, names)}")
        values[key] = coerce(f"{probe}.{key}", value, hints[key])
    if values.get("seed") is None and "seed" in names:
        values["seed"] = seed
    try:
        return cls(**values)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("option '") and not message.startswith(f"option '{probe}."):
            message = f"option '{probe}." + message[len("option '"):]
        raise ConfigError(message) from None


def describe_options(cls: type) -> list[dict[str, str]]:
    """[{name, type, default, help}] for listings and README."""
    hints = _field_types(cls)
    rows = []
    for f in option_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        if isinstance(default, tuple):
            default = ",".join(map(str, default)) or None
        if f.name == "seed":
            default = "--seed"
        rows.append({"name": f.name, "type": f.metadata.get("type") or type_name(hints[f.name]),
                     "default": "unset" if default is None else str(default).lower() if isinstance(default, bool)
                     else str(default), "help": f.metadata.get("help", "")})
    return rows
