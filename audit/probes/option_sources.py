"""From loose option sources (`-o`, `--limit`, a config file, the Python API) to one typed options object per
requested probe, checked before any model is loaded.

Keys: `{"toxicity": {"k": 5}}`, `{"toxicity.k": 5}` (also `rl:lending.k`), or a global `{"k": 5}` that goes to
every requested probe that has the field. Precedence, lowest first: global key, `--limit`, the probe's own
keys, the `rl:<env>` argument. A key or probe prefix nobody knows is an error naming the closest valid ones.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..errors import ConfigError
from . import PROBES, options_class
from .options import option_fields, parse_options, suggest


def known_keys(cls: type) -> set[str]:
    """Fields plus the deprecated spellings the class still reads."""
    return {f.name for f in option_fields(cls)} | set(cls.ALIASES) | set(cls.REPLACED)


def _probe_prefix(head: str, where: str, shown_names: list[str]) -> str:
    base = head.split(":", 1)[0]
    if base not in PROBES:
        raise ConfigError(f"unknown probe '{head}' in option '{where}'{suggest(head, sorted(PROBES) + shown_names)}")
    return head


def resolve_probe_options(resolved: list[tuple[str, str, dict[str, Any]]], options: Optional[dict[str, Any]],
                          seed: int, limit: Optional[int] = None,
                          say: Optional[Callable[[str], None]] = None,
                          notes: Optional[dict[str, list[str]]] = None) -> dict[str, Any]:
    """`resolved`: (shown name, probe name, extra) per requested probe, e.g. ("rl:lending", "rl", {"env": ...}).
    Returns shown name -> options object; deprecation warnings go to `say` and, per probe, into `notes`."""
    options = dict(options or {})
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit {limit}: expected an integer >= 1 (leave it out for every item)")
    shown_names = [shown for shown, _, _ in resolved]
    classes = {shown: options_class(name) for shown, name, _ in resolved}
    global_keys: dict[str, Any] = {}
    per_probe: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        key = str(key)
        if isinstance(value, dict):
            per_probe.setdefault(_probe_prefix(key, key, shown_names), {}).update(value)
        elif "." in key:
            head, sub = key.split(".", 1)
            per_probe.setdefault(_probe_prefix(head, key, shown_names), {})[sub] = value
        else:
            global_keys[key] = value
    for key in global_keys:
        if not any(key in known_keys(cls) for cls in classes.values()):
            every = sorted(set().union(*(known_keys(cls) for cls in classes.values())))
            raise ConfigError(f"unknown option '{key}' for probe{'s' if len(classes) > 1 else ''} "
                              f"{', '.join(shown_names)}{suggest(key, every)}")
    out: dict[str, Any] = {}
    for shown, name, extra in resolved:
        cls = classes[shown]
        raw = {k: v for k, v in global_keys.items() if k in known_keys(cls)}
        if limit is not None and "limit" in known_keys(cls):
            raw["limit"] = limit
        elif limit is not None and say is not None:
            say(f"audit: warning: --limit does not apply to {shown} (it has no list of items to sample)")
        raw.update(per_probe.get(name, {}))
        if shown != name:
            raw.update(per_probe.get(shown, {}))
        raw.update(extra)
        said: list[str] = []
        out[shown] = parse_options(cls, raw, probe=shown, seed=seed, say=said.append)
        for message in said:
            if say is not None:
                say(message)
            if notes is not None:
                notes.setdefault(shown, []).append(message.removeprefix("audit: warning: "))
    return out
