"""The walkthrough notebook (examples/walkthrough.ipynb): stored clean, and runs top to
bottom without an error or a warning, in a kernel of this very interpreter, writing
nothing into the repository or its working folder.

Running it needs nbclient, nbformat and ipykernel; without them that test is skipped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"

# Appended (in memory only) to the executed copy: which Python and which handprop ran.
PROBE = """
import json, sys, handprop
print(json.dumps({"prefix": sys.prefix, "executable": sys.executable,
                  "handprop": handprop.__file__}))
"""


def test_notebook_is_stored_clean() -> None:
    """Valid nbformat 4, kernel python3, no outputs or execution counts in the file."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert len(code) >= 10
    for cell in code:
        assert cell["outputs"] == [], f"cell {cell.get('id')} has stored outputs"
        assert cell["execution_count"] is None, f"cell {cell.get('id')} has a count"
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4))


def test_notebook_runs(tmp_path: Path) -> None:
    """Execute every cell with nbclient (cwd: a temporary folder) and check the run."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    before = NOTEBOOK.read_bytes()
    examples_before = sorted(p.name for p in NOTEBOOK.parent.iterdir())
    nb = nbformat.reads(before.decode("utf-8"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE, id="test-probe"))
    # Import this checkout's handprop even if another one is installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=env)  # raises CellExecutionError if a cell fails

    outputs = [(cell.get("id"), out) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs]
    assert not [o for _, o in outputs if o.output_type == "error"]
    stderr = [(cid, o.text) for cid, o in outputs
              if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"the notebook wrote to stderr (a warning?): {stderr}"

    # The kernel was this interpreter's environment, and imported this checkout.
    probe = json.loads(nb.cells[-1].outputs[0].text)
    assert Path(probe["prefix"]).resolve() == Path(sys.prefix).resolve()
    assert Path(probe["handprop"]).resolve().is_relative_to(ROOT)

    # It did the work: the gradient check passed, training ran, the pictures showed.
    text = "".join(o.get("text", "") for _, o in outputs if o.output_type == "stream")
    assert "worst relative error" in text and "WRONG" not in text
    assert "accuracy:" in text and "steps in" in text
    images = [cid for cid, o in outputs if "image/png" in o.get("data", {})]
    for cell in ("data", "cost", "kernels", "maps", "wrong"):
        assert cell in images, f"cell {cell!r} showed no picture"

    # Nothing written into the repository or the working folder; pictures cleaned up.
    assert NOTEBOOK.read_bytes() == before
    assert sorted(p.name for p in NOTEBOOK.parent.iterdir()) == examples_before
    assert list(tmp_path.iterdir()) == []
    pictures = text.split("pictures go to", 1)[1].split()[0]
    assert not Path(pictures).exists()
