"""Text corpora for the distribution-shift probe: any local file, and the three default slices.

A corpus file is either
  * `.txt`: one text per line (blank lines skipped), or
  * `.jsonl` (or `.json` array, or `.csv`): rows with `text`, or `prompt` (+ optional `completion`), or
    `template` with `{slot}` placeholders filled from the row's list fields (e.g. `groups`).

Each item keeps its `prompt` (what the model is asked to continue; for the logit lens and the
watch-list mass) and its `text` (prompt + completion; for teacher-forced divergence).

The default slices answer three questions:
  finetune       the shift the user asked for (the fine-tuning data, from the checkpoint's manifest),
  neutral        text unrelated to the fine-tune (what else moved?), written by the team,
  toxic_prompts  / group_mentions: the behaviour the user hoped to change (toxicity and bias prompts).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...errors import file_error

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
NEUTRAL_CORPUS = DATA_DIR / "neutral_corpus.txt"
TOXICITY_PROMPTS = DATA_DIR / "toxicity_prompts.jsonl"
COUNTERFACTUAL_TEMPLATES = DATA_DIR / "counterfactual_templates.jsonl"
WATCHLIST_TOXIC = DATA_DIR / "watchlist_toxic.txt"
SLOT = re.compile(r"\{(\w+)\}")


@dataclass
class CorpusItem:
    text: str
    prompt: str
    group: Optional[str] = None


@dataclass
class Corpus:
    """A named slice of texts (the name appears in the report's divergence_by_slice table)."""

    name: str
    items: list[CorpusItem]
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def _fill_template(row: dict[str, Any], template: str) -> list[tuple[str, Optional[str]]]:
    """Fill each `{slot}` with every value of the row's list field named `slot`, `slot`+'s' or, failing
    that, its only list field. Dict fields of lists (category -> descriptors) are flattened."""
    slots = sorted(set(SLOT.findall(template)))
    if not slots:
        return [(template, None)]
    lists: dict[str, list[str]] = {}
    for k, v in row.items():
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            lists[k] = v
        elif isinstance(v, dict) and v and all(isinstance(x, list) for x in v.values()):
            lists[k] = [str(x) for vals in v.values() for x in vals]
    if len(slots) != 1:
        return []
    slot = slots[0]
    values = lists.get(slot) or lists.get(slot + "s") or (next(iter(lists.values())) if len(lists) == 1 else None)
    if not values:
        return []
    return [(template.replace("{" + slot + "}", v), v) for v in values]


def _jsonl_items(path: Path, row: Any, line_no: int) -> list[CorpusItem]:
    if not isinstance(row, dict):
        raise file_error(path, "expected a JSON object per line", line=line_no)
    group = row.get("group") or row.get("category")
    group = str(group) if group is not None else None
    if isinstance(row.get("text"), str):
        return [CorpusItem(text=row["text"], prompt=row["text"], group=group)]
    if isinstance(row.get("prompt"), str):
        prompt = row["prompt"]
        completion = row.get("completion")
        if completion is not None and not isinstance(completion, str):
            raise file_error(path, "expected a string", line=line_no, field="completion")
        return [CorpusItem(text=prompt + (completion or ""), prompt=prompt, group=group)]
    if isinstance(row.get("prompt"), dict) and isinstance(row["prompt"].get("text"), str):  # RealToxicityPrompts
        prompt = row["prompt"]["text"]
        cont = row.get("continuation")
        cont_text = cont.get("text", "") if isinstance(cont, dict) else ""
        return [CorpusItem(text=prompt + cont_text, prompt=prompt, group=group)]
    if isinstance(row.get("template"), str):
        return [CorpusItem(text=t, prompt=t, group=g or group) for t, g in _fill_template(row, row["template"])]
    raise file_error(path, "expected a string field 'text', 'prompt' (+ 'completion') or 'template'",
                     line=line_no)


def _rows(path: Path, suffix: str, text: str):
    """(line number, row) pairs of a .jsonl, .json (array) or .csv file."""
    if suffix == ".csv":
        import csv
        import io

        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            yield reader.line_num, {k: v for k, v in row.items() if k is not None}
        return
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise file_error(path, f"invalid JSON ({exc.args[0] if exc.args else exc})") from None
        for i, row in enumerate(rows, start=1):
            yield i, row
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except ValueError as exc:
            raise file_error(path, f"invalid JSON ({exc.args[0] if exc.args else exc})", line=line_no) from None


def load_corpus(path: str | Path, name: Optional[str] = None, limit: Optional[int] = None) -> Corpus:
    """Read a .txt (one text per line), .jsonl / .json or .csv corpus; errors name the file and line."""
    path = Path(path).expanduser()
    if not path.exists():
        raise file_error(path, "corpus file does not exist; expected a .txt or .jsonl file")
    if path.is_dir():
        raise file_error(path, "is a directory; expected a .txt or .jsonl corpus file")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".json", ".csv"):
        raise file_error(path, f"unsupported corpus type '{suffix}'; expected .txt (one text per line), "
                               f".jsonl, .json or .csv")
    from ...textfiles import read_text

    text = read_text(path, "a corpus file")
    items: list[CorpusItem] = []
    if suffix == ".txt":
        items = [CorpusItem(text=line, prompt=line) for line in text.splitlines() if line.strip()]
    else:
        for line_no, row in _rows(path, suffix, text):
            if limit is not None and len(items) >= limit:
                break
            items.extend(_jsonl_items(path, row, line_no))
    items = [it for it in items if it.text.strip()]
    if limit is not None:
        items = items[:limit]
    if not items:
        raise file_error(path, "corpus is empty; expected at least one non-blank text")
    return Corpus(name=name or path.stem, items=items, source=str(path))


def finetune_data_path(model_handle: Any = None, data: Optional[dict[str, str]] = None) -> Optional[Path]:
    """The fine-tuning data file: `data['finetune']`, else the one the tuned checkpoint's fine-tune manifest
    names (audit.finetune.manifest)."""
    if data and data.get("finetune"):
        return Path(data["finetune"])
    desc = model_handle.describe() if model_handle is not None and hasattr(model_handle, "describe") else None
    from ...finetune.manifest import MANIFEST_NAME, finetune_manifest_of

    manifest = finetune_manifest_of(desc, Path(model_handle.path) / MANIFEST_NAME) if desc is not None else None
    if manifest is None:
        return None
    p = manifest.data_path
    if not p.is_absolute() and not p.exists():
        p = Path(model_handle.path) / p
    return p


def default_corpora(model_handle: Any = None, data: Optional[dict[str, str]] = None,
                    limit: Optional[int] = None) -> tuple[list[Corpus], list[str]]:
    """The default slices that exist, and a warning for each that does not."""
    corpora: list[Corpus] = []
    warnings: list[str] = []
    ft = finetune_data_path(model_handle, data)
    if ft is None:
        warnings.append("shift: no fine-tuning data found (no data path in the checkpoint's manifest and no "
                        "--data finetune=FILE); the 'finetune' slice is missing")
    elif not ft.exists():
        warnings.append(f"shift: fine-tuning data {ft} from the manifest does not exist here; "
                        f"the 'finetune' slice is missing (pass --data finetune=FILE)")
    else:
        corpora.append(load_corpus(ft, name="finetune", limit=limit))
    corpora.append(load_corpus(NEUTRAL_CORPUS, name="neutral", limit=limit))
    if TOXICITY_PROMPTS.exists():
        corpora.append(load_corpus(TOXICITY_PROMPTS, name="toxic_prompts", limit=limit))
    else:
        warnings.append(f"shift: {TOXICITY_PROMPTS.name} is not in audit/data; the 'toxic_prompts' slice is missing")
    corpora.append(group_mention_corpus(limit=limit))
    return corpora, warnings


def group_mention_corpus(limit: Optional[int] = None) -> Corpus:
    """The counterfactual probe's templates filled with every group descriptor (the same sentences that
    probe scores), so the shift probe sees how far a fine-tune moved predictions around group mentions."""
    from ..counterfactual import DEFAULT_DESCRIPTORS, load_descriptors, load_templates

    items: list[CorpusItem] = []
    for template in load_templates(COUNTERFACTUAL_TEMPLATES):
        for groups in load_descriptors(DEFAULT_DESCRIPTORS).values():
            for group, descriptor in groups.items():
                text = "".join(template.fill(descriptor))
                items.append(CorpusItem(text=text, prompt=text, group=group))
    if limit is not None:
        items = items[:limit]
    return Corpus(name="group_mentions", items=items, source=str(COUNTERFACTUAL_TEMPLATES))


def read_word_list(path: str | Path) -> list[str]:
    """One word or phrase per line; '#' starts a comment line."""
    path = Path(path).expanduser()
    if not path.exists():
        raise file_error(path, "word list does not exist; expected a text file with one word per line")
    from ...textfiles import read_text

    words = [w.strip() for w in read_text(path, "a word list").splitlines()]
    words = [w for w in words if w and not w.startswith("#")]
    if not words:
        raise file_error(path, "word list is empty; expected one word per line")
    return words


def watchlist_token_ids(tokenizer, words: list[str]) -> list[int]:
    """First token of each word, written with and without a leading space, so the mass counts the word
    whether it starts a text or follows another word."""
    ids: set[int] = set()
    for word in words:
        for variant in (word, " " + word):
            toks = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if toks:
                ids.add(int(toks[0]))
    return sorted(ids)
