"""HONEST template files (Nozza et al., NAACL 2021; MIT, https://github.com/MilaNLProc/honest, resources/).

A template file is a TSV with a header. Columns are read by NAME, because their order differs between the
released files: `template_masked` (the sentence with the completion slot `[M]`), `raw` (the same with the
identity slot `[I]`), `identity`, `category`, `number`, `type`. Extra columns are ignored, and so is an
unnamed leading index column. Nothing here knows which identities, categories or languages exist.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ...errors import file_error

MASK = "[M]"
IDENTITY_SLOT = "[I]"
COLUMNS = ("template_masked", "raw", "identity", "category", "number", "type")


@dataclass(frozen=True)
class Template:
    """One row of a template file. `gender` and `group` are set by identity substitution
    (audit.probes.honest.identities); `line` is the row's line in its file (1 = header)."""

    template_masked: str
    raw: str
    identity: str
    category: str
    number: str
    type: str
    line: int = 0
    group: str = ""
    gender: str = ""

    @property
    def prefix(self) -> str:
        """What the model continues: the text before the slot, without trailing spaces (a BPE tokenizer
        would otherwise end the prompt on a lone space token)."""
        return self.template_masked.split(MASK, 1)[0].rstrip()

    @property
    def after_mask(self) -> str:
        return self.template_masked.split(MASK, 1)[1]


def load_templates(path: str | Path) -> list[Template]:
    """Every row of a HONEST template TSV, in file order; a bad file raises one InputFileError naming
    the file (and the line and column where there is one)."""
    path = Path(path)
    if not path.exists():
        raise file_error(path, "HONEST template file not found")
    if not path.is_file():
        raise file_error(path, "is not a file; expected a HONEST template TSV")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            header = [h for h in (reader.fieldnames or []) if h is not None]
            if not header:
                raise file_error(path, f"empty file; expected a TSV header with {', '.join(COLUMNS)}")
            for col in COLUMNS:
                if col not in header:
                    raise file_error(path, f"missing column; expected a TSV header with {', '.join(COLUMNS)} "
                                     f"in any order (found: {', '.join(header)})", field=col)
            rows = []
            for row in reader:
                line = reader.line_num
                values = {}
                for col in COLUMNS:
                    v = row.get(col)
                    if v is None:
                        raise file_error(path, "row has fewer columns than the header", line=line, field=col)
                    values[col] = v.strip()
                if not values["template_masked"] and not values["raw"]:
                    continue  # a blank line
                if values["template_masked"].count(MASK) != 1:
                    raise file_error(path, f"expected exactly one {MASK} slot (found "
                                     f"{values['template_masked'].count(MASK)})", line=line, field="template_masked")
                if values["raw"].count(MASK) != 1 or values["raw"].count(IDENTITY_SLOT) != 1:
                    raise file_error(path, f"expected one {IDENTITY_SLOT} and one {MASK} slot", line=line,
                                     field="raw")
                if not values["template_masked"].split(MASK, 1)[0].strip():
                    raise file_error(path, f"nothing before the {MASK} slot to continue", line=line,
                                     field="template_masked")
                for col in ("identity", "category"):
                    if not values[col]:
                        raise file_error(path, "empty value", line=line, field=col)
                rows.append(Template(line=line, **values))
    except UnicodeDecodeError:
        raise file_error(path, "not UTF-8 text; expected a HONEST template TSV") from None
    if not rows:
        raise file_error(path, "no templates; expected at least one row after the header", field="template_masked")
    return rows


@dataclass(frozen=True)
class Item:
    """One distinct template to continue (rows repeating a `template_masked` are one item, as in the
    reference package, which keys templates by it). `categories` lists every category it is filed under."""

    template: Template
    categories: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.template.template_masked


def distinct_items(templates: list[Template]) -> tuple[list[Item], int]:
    """(items in first-seen order, number of rows that repeated an earlier template_masked)."""
    first: dict[str, Template] = {}
    cats: dict[str, list[str]] = {}
    for t in templates:
        first.setdefault(t.template_masked, t)
        if t.category not in cats.setdefault(t.template_masked, []):
            cats[t.template_masked].append(t.category)
    items = [Item(t, tuple(cats[k])) for k, t in first.items()]
    return items, len(templates) - len(items)
