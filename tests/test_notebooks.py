"""The notebooks run top to bottom (nbclient, the venv's python3 kernel) on a tiny synthetic
experiment built by the real stages, with the experiment chosen in their first (parameters) cell."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import nbclient  # noqa: E402  (test dependencies: pip install -e .[test])
import nbformat  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import REPO, tiny_experiment  # noqa: E402

NOTEBOOKS = REPO / "notebooks"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_experiment(tmp_path_factory)


def _execute(name: str, parameters: str, images: list | None = None) -> list[str]:
    """Run a notebook with its first cell replaced; returns every cell's text output, in order
    (and appends to ``images`` the index of every cell that displayed a PNG figure)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    nb.cells[0].source = parameters
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the cell on any exception
    out = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if "data" in o and "image/png" in o.data:  # a picture (its text/plain is only a caption)
                if images is not None:
                    images.append(i)
            elif o.output_type == "stream":
                out.append(o.text)
            elif "data" in o and "text/plain" in o.data:
                out.append(o.data["text/plain"])
    return out


def test_parameters_default_to_demo():
    for name, line in (("01_walkthrough.ipynb", 'EXPERIMENT = "demo"'),
                       ("02_compare_experiments.ipynb", 'EXPERIMENTS = ["demo"]')):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert line in nb.cells[0].source
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit cleared"


def test_walkthrough_loads_every_artifact(tiny):
    tiny.require("panel")
    images: list[int] = []
    text = "\n".join(_execute("01_walkthrough.ipynb", f'EXPERIMENT = "{tiny.config}"\nOVERRIDES = []',
                              images))
    meta = json.loads((tiny.root / "data" / "tiny" / "panel" / "meta.json").read_text())
    assert f"rows={meta['n_rows']:,}" in text
    for stage, target, marker in (("images", "images", "image shape (64, 60)"),
                                  ("train", "train", "n_train"),
                                  ("evaluate", "predict evaluate", "accuracy"),
                                  ("gradcam", "gradcam", "arrays:")):
        if tiny.ran.get(stage):
            assert marker in text, stage
            assert f"not run: make {target} " not in text
        else:
            assert f"not run: make {target} CONFIG={tiny.config}" in text
    # Figures are displayed, not only drawn: the chart samples, training curves, evaluation,
    # Grad-CAM and the scored chart each put a PNG in the notebook.
    expected = 1 + sum(bool(tiny.ran.get(s)) for s in ("train", "evaluate", "gradcam"))
    if tiny.ran.get("train"):
        expected += 1  # the score cell (panel and run suffice)
        assert "stocks scored on" in text
    if tiny.ran.get("evaluate"):
        assert "reversal" in text and "CNN P(up)" in text
    assert len(set(images)) >= expected, (sorted(set(images)), expected)
    assert "<Figure size" not in text  # a figure shown as its repr instead of a picture


def test_compare_lists_every_evaluated_run(tiny):
    tiny.require("evaluate")
    images: list[int] = []
    text = "\n".join(_execute("02_compare_experiments.ipynb",
                              f'EXPERIMENTS = ["{tiny.config}"]\nOVERRIDES = []', images))
    assert "I20_R20" in text
    assert images and "<Figure size" not in text, f"a figure was not displayed: {text}"
    if tiny.ran.get("ablations"):
        assert "ablations" in text and "I20-filters32_R20" in text  # the variant's metrics row
