import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "examples").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    """Every example notebook executes top to bottom (on a copy: the committed outputs stay as they are)."""
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    book = nbformat.read(copy, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
    assert (
        any("image/png" in o.get("data", {}) for cell in book.cells if cell.cell_type == "code" for o in cell.outputs)
        or path.stem == "05_nnsight"
    )


def test_the_eight_notebooks_exist_with_outputs() -> None:
    assert [p.stem for p in NOTEBOOKS] == [
        "01_steering_quickstart",
        "02_rmu_on_the_toy_world",
        "03_probes_and_norms",
        "04_attacks",
        "05_nnsight",
        "06_patching_and_lens",
        "07_vectors_across_tools",
        "08_robust_unlearning",
    ]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        assert all(cell.outputs for cell in book.cells if cell.cell_type == "code"), path.name
