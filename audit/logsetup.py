"""audit's own logging setup for notebooks and scripts: quiet the libraries, keep audit's progress.

A notebook that loads a model through transformers and peft otherwise fills with FutureWarnings,
"Loading weights" bars and advisories, and shows nothing from audit itself. `audit.setup_logging()`
turns the libraries' bars and warnings off, routes the `audit` logger to stderr, and keeps audit's
progress on: outside a terminal (a notebook) it prints stage lines and heartbeats (`audit.progress`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: Libraries whose warnings and bars are noise in an audit notebook (their errors still show).
NOISY = ("transformers", "peft", "accelerate", "datasets", "huggingface_hub", "torch", "bitsandbytes",
         "sklearn", "fairlearn", "gymnasium", "tokenizers", "tqdm")
_AUDIT_DIR = os.path.dirname(os.path.abspath(__file__))


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """audit's own advisories as one readable line; everything else as Python prints it."""
    if os.path.abspath(filename).startswith(_AUDIT_DIR):
        import time

        print(f"[{time.strftime('%H:%M:%S')}] note: {message}", file=file or sys.stderr, flush=True)
    else:
        _DEFAULT_SHOW(message, category, filename, lineno, file, line)


_DEFAULT_SHOW = warnings.showwarning


def setup_logging(quiet_libraries: bool = True, progress: bool = True, level: int = logging.INFO) -> None:
    """Call once at the top of a notebook. Idempotent."""
    if progress:
        os.environ.pop("AUDIT_NO_PROGRESS", None)
    logger = logging.getLogger("audit")
    if not any(getattr(h, "_audit_setup", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        handler._audit_setup = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    warnings.showwarning = _show_warning
    if not quiet_libraries:
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in NOISY:
        warnings.filterwarnings("ignore", module=rf"{name}(\..*)?$")
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
