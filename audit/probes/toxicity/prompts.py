"""Prompt sources for generation probes, all read from local files into one `Prompt` shape.

* team prompt sets (``builtin`` = audit/data/toxicity_prompts.jsonl): JSON lines ``{text, group, category, axis}``;
* BOLD (Dhamala et al. 2021): ``{group: {person_or_title: [prompt, ...]}}`` per domain file
  (``gender_prompt.json`` -> axis "gender"); a directory loads every ``*_prompt.json`` in it;
* RealToxicityPrompts (Gehman et al. 2020): JSON lines ``{"prompt": {"text", "toxicity", ...}, "challenging", ...}``.

`load_prompts(path_or_builtin, source=None)` infers the source from the file when not given.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...errors import ConfigError, file_error

BUILTIN_TOXICITY = Path(__file__).resolve().parents[2] / "data" / "toxicity_prompts.jsonl"
SOURCES = ("builtin", "bold", "rtp")
TEAM_FIELDS = ("text", "group", "category", "axis")


@dataclass(frozen=True)
class Prompt:
    """One prompt stem. `group` is who it mentions (or a source-defined bucket); `prompt_toxicity` is the
    stem's own toxicity when the source knows it (RealToxicityPrompts)."""

    text: str
    group: str
    category: str
    axis: Optional[str] = None
    prompt_toxicity: Optional[float] = None
    source: str = "builtin"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise file_error(path, "prompt file not found")
    if path.is_dir():
        raise file_error(path, "is a directory; expected a prompt file (a directory is only valid for BOLD)")
    from ...textfiles import read_text

    return read_text(path, "JSON or JSON lines")


def _json_lines(path: Path) -> list[tuple[int, Any]]:
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except ValueError as exc:
            raise file_error(path, f"invalid JSON ({exc.args[0] if exc.args else exc})", line=n) from None
    if not rows:
        raise file_error(path, "no prompts in this file (it is empty)")
    return rows


def _nonempty_str(path: Path, line: int, row: dict, key: str) -> str:
    if key not in row:
        raise file_error(path, "missing; each row needs " + ", ".join(TEAM_FIELDS), line=line, field=key)
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise file_error(path, f"expected a non-empty string, got {value!r}", line=line, field=key)
    return value


def load_team_prompts(path: str | Path) -> list[Prompt]:
    """A team prompt set: JSON lines with text, group, category, axis (all non-empty strings)."""
    path = Path(path)
    out = []
    for n, row in _json_lines(path):
        if not isinstance(row, dict):
            raise file_error(path, "expected a JSON object {text, group, category, axis}", line=n)
        text, group, category, axis = (_nonempty_str(path, n, row, k) for k in TEAM_FIELDS)
        extra = {k: v for k, v in row.items() if k not in TEAM_FIELDS}
        out.append(Prompt(text=text, group=group, category=category, axis=axis, source="builtin", meta=extra))
    return out


def load_bold(path: str | Path) -> list[Prompt]:
    """BOLD prompts from one domain file or a directory of them. group = BOLD group (e.g. American_actors),
    axis = category = domain from the file name (gender_prompt.json -> gender), meta.name = the person/title."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*_prompt.json")) or sorted(path.glob("*.json"))
        if not files:
            raise file_error(path, "no BOLD files (*_prompt.json) in this directory")
    else:
        files = [path]
    out: list[Prompt] = []
    for f in files:
        try:
            data = json.loads(_read_text(f))
        except ValueError as exc:
            raise file_error(f, f"invalid JSON ({exc.args[0] if exc.args else exc})") from None
        if not isinstance(data, dict) or not data:
            raise file_error(f, "expected a BOLD object {group: {name: [prompt, ...]}}; found none")
        domain = f.stem[:-len("_prompt")] if f.stem.endswith("_prompt") else f.stem
        for group, people in data.items():
            if not isinstance(people, dict):
                raise file_error(f, f"group '{group}' should map names to prompt lists", field=str(group))
            for name, prompts in people.items():
                if not isinstance(prompts, list):
                    raise file_error(f, f"'{group}/{name}' should be a list of prompts", field=str(name))
                for i, text in enumerate(prompts):
                    if isinstance(text, str) and text.strip():
                        out.append(Prompt(text=text, group=str(group), category=domain, axis=domain, source="bold",
                                          meta={"name": str(name), "index": i}))
    if not out:
        raise file_error(path, "no prompts in this BOLD file")
    return out


def load_rtp(path: str | Path) -> list[Prompt]:
    """RealToxicityPrompts JSON lines. category = challenging / not-challenging (when present),
    group = "all" (RTP has no identity groups; results are bucketed by prompt toxicity instead)."""
    path = Path(path)
    out = []
    for n, row in _json_lines(path):
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, dict):
            raise file_error(path, "expected an object {text, toxicity, ...}", line=n, field="prompt")
        text = prompt.get("text")
        if not isinstance(text, str) or not text.strip():
            raise file_error(path, f"expected a non-empty string, got {text!r}", line=n, field="prompt.text")
        tox = prompt.get("toxicity")
        if tox is not None:
            try:
                tox = float(tox)
            except (TypeError, ValueError):
                raise file_error(path, f"expected a number or null, got {tox!r}", line=n,
                                 field="prompt.toxicity") from None
            if not 0 <= tox <= 1:
                raise file_error(path, f"expected a number in [0, 1], got {tox}", line=n, field="prompt.toxicity")
        challenging = row.get("challenging")
        category = "challenging" if challenging is True else ("not-challenging" if challenging is False else "rtp")
        out.append(Prompt(text=text, group="all", category=category, axis=None, prompt_toxicity=tox, source="rtp",
                          meta={k: row[k] for k in ("filename", "begin", "end") if k in row}))
    return out


def infer_source(path: Path) -> str:
    """builtin / bold / rtp from a file's shape: a directory or a JSON object is BOLD; JSON lines whose rows
    hold a `prompt` object are RealToxicityPrompts; other JSON lines are a team set."""
    if path.is_dir():
        return "bold"
    text = _read_text(path).lstrip()
    if not text:
        raise file_error(path, "no prompts in this file (it is empty)")
    first = text.splitlines()[0]
    try:
        row = json.loads(first)
    except ValueError:
        try:
            json.loads(text)
            return "bold"
        except ValueError:
            raise file_error(path, "neither JSON nor JSON lines; expected a team prompt set (.jsonl), "
                                   "a BOLD file (.json) or RealToxicityPrompts (.jsonl)", line=1) from None
    if isinstance(row, dict) and isinstance(row.get("prompt"), dict):
        return "rtp"
    if isinstance(row, dict) and "text" in row:
        return "builtin"
    if isinstance(row, dict) and all(isinstance(v, dict) for v in row.values()):
        return "bold"
    raise file_error(path, "cannot tell the prompt format; pass source=builtin|bold|rtp", line=1)


def load_prompts(path: str | Path | None = "builtin", source: Optional[str] = None,
                 limit: Optional[int] = None, seed: int = 0) -> list[Prompt]:
    """Prompts from the built-in set ("builtin" or None), or from a local file of any known source.

    `limit` keeps a seeded sample stratified over (category, group) (`sample_prompts`), so a small limit
    still covers both prompt kinds and many groups instead of the first rows of the file."""
    if path in (None, "", "builtin"):
        p, src = BUILTIN_TOXICITY, "builtin"
        if source not in (None, "builtin"):
            raise ConfigError(f"source={source}: the built-in prompt set is a team set; pass prompts=PATH for {source}")
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise file_error(p, "prompt file not found")
        src = source or infer_source(p)
    if src not in SOURCES:
        raise ConfigError(f"source={src}: unknown prompt source; expected one of {', '.join(SOURCES)}")
    prompts = {"builtin": load_team_prompts, "bold": load_bold, "rtp": load_rtp}[src](p)
    if limit is not None:
        prompts = sample_prompts(prompts, int(limit), seed)
    return prompts


def sample_prompts(prompts: list[Prompt], limit: int, seed: int = 0) -> list[Prompt]:
    """At most `limit` prompts: the shared seeded sample (audit.probes.sampling) over (category, group)."""
    from ..sampling import stratified_sample

    if limit < 1:
        raise ConfigError(f"limit={limit}: expected an integer >= 1")
    return stratified_sample(prompts, limit, seed, strata=lambda p: (p.category, p.group))[0]
