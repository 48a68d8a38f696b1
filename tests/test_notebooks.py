"""The notebooks run top to bottom, offline, on tiny models, in a kernel of this very interpreter.

The kernel is started from a kernelspec written into a temporary directory whose argv is
`sys.executable`, so the notebooks always import this checkout's `audit` and its venv's packages,
whatever kernels (or none) the machine has installed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "audit-test-venv"


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    from jupyter_client.kernelspec import KernelSpecManager

    kernels = tmp_path_factory.mktemp("jupyter") / "kernels"
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "audit (test venv)", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    return ksm


def test_kernelspec_resolves_to_this_interpreter(kernel_spec_manager):
    spec = kernel_spec_manager.get_kernel_spec(KERNEL_NAME)
    assert spec.argv[0] == sys.executable and Path(spec.argv[0]).exists()


def _execute(path: Path, ksm, cwd: Path):
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "AUDIT_NO_PROGRESS": "1", "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    client = NotebookClient(nb, km=km, timeout=600, kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb


def _notebooks():
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path, kernel_spec_manager, tmp_path):
    nb = _execute(path, kernel_spec_manager, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    # every code cell ran (nbclient stops at the first exception, so this also guards against skips)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip())


def test_notebooks_use_only_the_public_api():
    """Notebooks are documentation: they import `audit` (and audit.lab.tiny / audit.finetune), not internals."""
    allowed = ("import audit", "from audit.lab.tiny import", "from audit.finetune import",
               "from audit.rl.behaviour_cloning import write_bc_data")
    assert _notebooks(), "no notebooks found"
    for path in _notebooks():
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            for line in "".join(cell["source"]).splitlines():
                s = line.strip()
                if (s.startswith("import audit") or s.startswith("from audit")) and not s.startswith(allowed):
                    pytest.fail(f"{path.name}: '{s}' reaches past the public API")


def test_committed_notebooks_read_well():
    """Committed with the outputs of a real run (small), plots inline, audit's progress visible, no library
    warnings or third-party bars, and a written interpretation at the end."""
    for path in _notebooks():
        assert path.stat().st_size < 1_000_000, f"{path.name}: over 1 MB"
        nb = json.loads(path.read_text())
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert 'matplotlib.use("Agg")' not in code and "audit.setup_logging()" in code, path.name
        last = nb["cells"][-1]
        assert last["cell_type"] == "markdown" and "".join(last["source"]).startswith("## What this run shows"), \
            f"{path.name}: end with a written interpretation"
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert outputs, f"{path.name}: commit the outputs of a real run"
        assert not [o for o in outputs if o.get("output_type") == "error"], path.name
        stderr = "".join("".join(o.get("text", "")) for o in outputs if o.get("name") == "stderr")
        assert not re.search(r"\w+Warning\b", stderr) and "it/s]" not in stderr, \
            f"{path.name}: library noise in the outputs"
        assert "] toxicity: " in stderr or "] rl" in stderr or "] finetune" in stderr, \
            f"{path.name}: audit's own progress is not visible"
        if "plt." in code:
            assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: plots are not inline"
