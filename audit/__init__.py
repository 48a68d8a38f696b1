"""audit: did your fine-tuning method remove the toxic or biased behaviour of the base model, or keep it?

Public API (imported lazily so `import audit` and `audit --help` stay fast)::

    audit.load(path, base=None, load_in_4bit=False)      -> ModelHandle
    audit.run_probes(model, ["toxicity", "bbq"], out)   -> run directory
    audit.load_run(run_dir)                             -> (manifest, {probe: result})
    audit.RunDir(run_dir).iter_rows("toxicity")         -> a probe's per-item rows, streamed
    audit.compare([run_dir, ...], base=run_dir)         -> pandas DataFrame
    audit.write_report([run_dir, ...], "report.html")   -> self-contained HTML (fmt="md": Markdown)
    audit.setup_logging()                               # notebooks: quiet libraries, audit's progress on
    from audit.finetune import finetune                   # the package audit.finetune holds the methods
    finetune(method="lora", model=..., data=..., out=..., rank=[1, 4, 16])
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load": "audit.lm.models:load",
    "ModelHandle": "audit.lm.models:ModelHandle",
    "run_probes": "audit.api:run_probes",
    "load_run": "audit.api:load_run",
    "RunDir": "audit.rundir:RunDir",
    "compare": "audit.report.compare:compare",
    "write_report": "audit.report.html:write_report",
    "AuditError": "audit.errors:AuditError",
    "setup_logging": "audit.logsetup:setup_logging",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
