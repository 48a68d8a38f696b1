"""Read a HateCheck-format test suite (Röttger et al., 2021): labelled cases with functionality and target.

Any file in the format works (other target groups and languages exist upstream): the columns
`functionality`, `test_case`, `label_gold` (hateful / non-hateful) and `target_ident` (empty when the case
names no group) are required; group and functionality names come from the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import file_error
from ..textfiles import csv_read_errors

REQUIRED = ("functionality", "test_case", "label_gold", "target_ident")
LABELS = {"hateful": 1, "non-hateful": 0}


@dataclass(frozen=True)
class HateCheckCase:
    text: str
    hateful: bool
    functionality: str
    target: Optional[str]  # None when the case names no group
    case_id: Optional[str] = None


def load_hatecheck(path: str | Path, limit_per_functionality: Optional[int] = None) -> list[HateCheckCase]:
    """All cases of a HateCheck CSV, or the first N of each functionality (a deterministic slice)."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "HateCheck file not found; expected a CSV with columns " + ", ".join(REQUIRED))
    with csv_read_errors(path, "a HateCheck CSV"), open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise file_error(path, f"missing column(s) {', '.join(missing)}; expected a HateCheck CSV with "
                                   f"columns {', '.join(REQUIRED)}")
        cases, seen = [], {}
        for line, row in enumerate(reader, start=2):
            label = (row["label_gold"] or "").strip().lower()
            if label not in LABELS:
                raise file_error(path, f"'{row['label_gold']}' is not a label; expected hateful or "
                                       f"non-hateful", line=line, field="label_gold")
            func = (row["functionality"] or "").strip()
            text = row["test_case"]
            if not func or text is None:
                raise file_error(path, "empty functionality or test_case", line=line)
            seen[func] = seen.get(func, 0) + 1
            if limit_per_functionality is not None and seen[func] > limit_per_functionality:
                continue
            target = (row["target_ident"] or "").strip() or None
            cases.append(HateCheckCase(text=text, hateful=bool(LABELS[label]), functionality=func,
                                       target=target, case_id=(row.get("case_id") or None)))
    if not cases:
        raise file_error(path, "no test cases")
    return cases


def identity_functionalities(cases: list[HateCheckCase]) -> list[str]:
    """The non-hateful statements about a group (HateCheck's `ident_*_nh`: neutral and positive ones)."""
    return sorted({c.functionality for c in cases
                   if c.functionality.startswith("ident_") and not c.hateful and c.target})
