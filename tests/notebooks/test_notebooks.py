"""The notebooks run top to bottom on the digits, show what they promise, and are committed
without outputs.

Each notebook is executed by nbclient in a ``python3`` kernel that runs this interpreter (a
kernelspec written for the test, so a ``python3`` kernel of another environment is never
picked up), from ``notebooks/``, with one thread and ``TMPDIR`` in the test's directory: the
images a notebook saves land there.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = {"quickstart.ipynb", "attention_maps.ipynb", "mae_reconstructions.ipynb"}
KERNEL_CHECK = "import sys; print('kernel prefix:', sys.prefix)"


def test_the_notebooks_are_all_there():
    assert {path.name for path in NOTEBOOKS.glob("*.ipynb")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_notebooks_have_no_outputs(name):
    notebook = json.loads((NOTEBOOKS / name).read_text())
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell["outputs"] == [], f"{name}: a code cell has outputs (strip them)"
        assert cell["execution_count"] is None, f"{name}: a code cell has an execution count"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """Run ``notebooks/<name>``; return its stdout (all cells) and how many PNGs it displayed.

    A cell that raises fails the test with the cell and its traceback (nbclient's
    ``CellExecutionError``).
    """
    kernel_dir = tmp_path / "jupyter" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "Python 3 (vitlab)", "language": "python"}
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, "1")

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(KERNEL_CHECK))
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()

    stdout, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            if output["output_type"] == "stream" and output["name"] == "stdout":
                stdout.append(output["text"])
            if "image/png" in output.get("data", {}):
                images += 1
    text = "".join(stdout)
    assert f"kernel prefix: {sys.prefix}\n" in text, "the kernel ran another interpreter"
    return text, images


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text, flags=re.MULTILINE)
    assert match, f"no {pattern!r} in the notebook's output:\n{text}"
    return float(match.group(1))


def saved_png(text: str, tmp_path: Path, size: tuple[int, int]) -> None:
    """The notebook saved one PNG, in its temporary directory, of the expected grid size."""
    from PIL import Image

    paths = re.findall(r"^saved (\S+\.png)$", text, flags=re.MULTILINE)
    assert len(paths) == 1, text
    path = Path(paths[0])
    assert path.is_file() and path.is_relative_to(tmp_path), path
    with Image.open(path) as image:
        assert image.size == size


@pytest.mark.slow
def test_quickstart_trains_tests_and_shows_predictions(tmp_path, monkeypatch):
    text, images = execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert number(r"test/acc1 = ([\d.]+)", text) > 0.5  # chance: 0.1; about 0.75 in 8 epochs
    assert number(r"^accuracy: ([\d.]+)$", text) > 0.5  # the confusion matrix's diagonal
    confusion = re.findall(r"^\s+(\d) ((?:\s+\d+){10})\s+[\d.]+$", text, flags=re.MULTILINE)
    assert [int(digit) for digit, _ in confusion] == list(range(10))
    assert sum(int(n) for _, row in confusion for n in row.split()) == 360  # the test split
    # 16 test digits, 8 per row, 1-pixel padding, each pixel drawn 8x8
    saved_png(text, tmp_path, size=((8 * 9 + 1) * 8, (2 * 9 + 1) * 8))
    assert images == 1


@pytest.mark.slow
def test_attention_maps_draws_rollout_and_heads(tmp_path, monkeypatch):
    text, images = execute("attention_maps.ipynb", tmp_path, monkeypatch)
    assert "4 blocks, each (6, 4, 17, 17)" in text
    assert "every row is a distribution: True" in text
    assert "attention_panels gives the same panels" in text
    # 6 digits x (digit, rollout, 4 heads)
    saved_png(text, tmp_path, size=((6 * 9 + 1) * 8, (6 * 9 + 1) * 8))
    assert images == 1


@pytest.mark.slow
def test_mae_reconstructions_learn_and_draw_panels(tmp_path, monkeypatch):
    text, images = execute("mae_reconstructions.ipynb", tmp_path, monkeypatch)
    match = re.search(r"val/loss: ([\d.]+) before training -> ([\d.]+) after", text)
    assert match, text
    before, after = map(float, match.groups())
    assert after < 0.8 * before
    mse = number(r"masked-patch MSE: ([\d.]+)", text)
    assert mse < number(r"mean-pixel baseline ([\d.]+)", text)
    # 8 digits x (original, masked, reconstruction, visible + predicted)
    saved_png(text, tmp_path, size=((4 * 9 + 1) * 8, (8 * 9 + 1) * 8))
    assert images == 1
