"""Identity substitution: the race and religion versions of HONEST used by Das et al. (2024).

Each distinct (`raw`, `number`) template of a file has its `[I]` slot rewritten with a list's `phrase`
("the {group} {noun}") for every group and every gender noun of the template's grammatical number:
"[I] should work as a [M]" -> "the Black woman should work as a [M].", "the Muslim men are the best [M]."
The team's lists live in audit/data/honest_identities.json (`race`, `religion`); a user file holds one list
in the same shape, so other groups and languages need no code change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError, file_error
from .templates import IDENTITY_SLOT, MASK, Template

BUILTIN_LISTS = Path(__file__).resolve().parents[2] / "data" / "honest_identities.json"


@dataclass(frozen=True)
class IdentityList:
    """Groups x gender nouns (per grammatical number) and the phrase that joins them."""

    name: str
    source: str
    phrase: str
    groups: tuple[str, ...]
    genders: dict[str, dict[str, str]]  # gender -> number ("singular", "plural", ...) -> noun
    sha256: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "sha256": self.sha256, "phrase": self.phrase,
                "groups": list(self.groups), "genders": self.genders}


def _parse(obj, where: Path, sha: str, name_hint: str) -> IdentityList:
    if not isinstance(obj, dict):
        raise file_error(where, "expected a JSON object with phrase, groups and genders")
    phrase = obj.get("phrase")
    if not isinstance(phrase, str) or "{group}" not in phrase or "{noun}" not in phrase:
        raise file_error(where, "expected a string containing {group} and {noun}, e.g. \"the {group} {noun}\"",
                         field="phrase")
    groups = obj.get("groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) and g.strip() for g in groups):
        raise file_error(where, "expected a non-empty list of group names", field="groups")
    if len(set(groups)) != len(groups):
        raise file_error(where, "a group is listed twice", field="groups")
    genders = obj.get("genders")
    if not isinstance(genders, dict) or not genders:
        raise file_error(where, "expected {gender: {number: noun}}, e.g. {\"female\": {\"singular\": \"woman\"}}",
                         field="genders")
    for g, nouns in genders.items():
        if not isinstance(nouns, dict) or not nouns or not all(isinstance(n, str) and n.strip()
                                                              for n in nouns.values()):
            raise file_error(where, "expected {number: noun} with non-empty nouns", field=f"genders.{g}")
    return IdentityList(name=str(obj.get("name") or name_hint), source=str(where), phrase=phrase,
                        groups=tuple(g.strip() for g in groups),
                        genders={g: {k: v.strip() for k, v in n.items()} for g, n in genders.items()}, sha256=sha)


def load_identity_list(spec: str) -> IdentityList:
    """`race` / `religion` (the team's lists) or the path of a JSON file holding one list."""
    builtin = json.loads(BUILTIN_LISTS.read_text(encoding="utf-8"))
    if spec in builtin and not spec.startswith("_"):
        sha = hashlib.sha256(json.dumps(builtin[spec], sort_keys=True).encode()).hexdigest()
        return _parse(builtin[spec], BUILTIN_LISTS, sha, spec)
    path = Path(spec)
    if not path.exists():
        names = ", ".join(k for k in builtin if not k.startswith("_"))
        raise ConfigError(f"option 'identities': {spec!r} is neither a built-in list ({names}) nor an existing "
                          f"JSON file")
    try:
        data = path.read_bytes()
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise file_error(path, f"not valid JSON ({str(exc).splitlines()[0]}); expected one identity list") from None
    return _parse(obj, path, hashlib.sha256(data).hexdigest(), path.stem)


def substitute(templates: list[Template], identities: IdentityList, source: str = "") -> list[Template]:
    """One template per distinct (raw, number) x group x gender, in that order. The text after the slot
    (e.g. the final period) is kept from the template's first row."""
    seen: dict[tuple[str, str], Template] = {}
    for t in templates:
        seen.setdefault((t.raw, t.number), t)
    out = []
    for (raw, number), first in seen.items():
        tail = first.after_mask
        for group in identities.groups:
            for gender, nouns in identities.genders.items():
                noun = nouns.get(number)
                if noun is None:
                    raise file_error(source or identities.source,
                                     f"identity list {identities.name!r} has no {gender} noun for number "
                                     f"{number!r} (has: {', '.join(nouns)})", line=first.line, field="number")
                identity = identities.phrase.format(group=group, noun=noun)
                filled = raw.replace(IDENTITY_SLOT, identity)
                masked = filled.split(MASK, 1)[0] + MASK + tail
                out.append(Template(template_masked=masked, raw=raw, identity=identity, category=group,
                                    number=number, type=first.type, line=first.line, group=group, gender=gender))
    return out
