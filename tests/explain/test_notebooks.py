"""The explainability notebooks execute end to end (they train tiny models inside; slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[2] / "docs" / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("explain_*.ipynb"))


def test_notebooks_exist_with_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert {p.stem for p in NOTEBOOKS} >= {"explain_tracking", "explain_calo"}
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.get("outputs") is not None for c in code)
        assert any(c.outputs for c in code), f"{p.name} is not rendered"
        assert not any(o.get("output_type") == "error" for c in code for o in c.outputs), p.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    (tmp_path / "figures").mkdir()
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "figures").glob("*.png")
    assert any((tmp_path / "figures").iterdir())
