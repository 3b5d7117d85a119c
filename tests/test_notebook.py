"""notebooks/fedfocal_walkthrough.ipynb runs top to bottom, headless, on a private SuperLink.

The test replaces the notebook's parameters cell with a fast setting (2 rounds, 3
SuperNodes, digits) and fails on any cell error. The committed notebook, with its
outputs, is produced by running this module as a script, which executes the notebook
unchanged (its own parameters) against a private SuperLink and writes it in place:

    PYTHONPATH=. python tests/test_notebook.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).parent))  # flower_harness, when run as a script

from flower_harness import PROJECT_ROOT, simulation_superlink  # noqa: E402

NOTEBOOK = PROJECT_ROOT / "notebooks" / "fedfocal_walkthrough.ipynb"
MAX_NOTEBOOK_BYTES = 1_200_000
STRATEGY_NAMES = ("FedAvg (CE)", "FedAvg + focal loss", "FedFocal")


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The one code cell tagged ``parameters`` (papermill's convention)."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
    return cells[0]


def execute(nb: nbformat.NotebookNode, superlink_env: dict[str, str], timeout: int) -> None:
    """Run every cell in a fresh ``python3`` kernel (this interpreter's), in place.

    The kernel's environment points ``flwr`` at the private SuperLink (``FLWR_HOME``)
    and finds ``fedfocal_app`` from a checkout that is not pip-installed.
    """
    env = {
        **superlink_env,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,  # per cell
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute(env=env)  # raises CellExecutionError on the first failing cell


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.timeout(900)
def test_notebook_runs_top_to_bottom_on_a_private_superlink(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters_cell(nb).source = (
        "NUM_ROUNDS = 2\n"
        "NUM_SUPERNODES = 3\n"
        "DIRICHLET_ALPHA = 0.5\n"
        "SEEDS = [0]\n"
        'DATA_DIR = ""\n'
        'SUPERLINK = "test"\n'
        f"FLWR_HOME = {str(tmp_path / 'flwr_home')!r}\n"
        f"OUTPUT_DIR = {str(tmp_path / 'runs')!r}\n"
    )
    with simulation_superlink(tmp_path) as link:
        assert link.name == "test" and link.env["FLWR_HOME"] == str(tmp_path / "flwr_home")
        execute(nb, link.env, timeout=600)

    text = outputs_text(nb)
    for name in STRATEGY_NAMES:
        assert f"{name:20s} accuracy" in text
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == [
        "digits-fedavg-ce-a0.5-s0",
        "digits-fedavg-focal-a0.5-s0",
        "digits-fedfocal-focal-a0.5-s0",
    ]
    for run in runs:
        assert (tmp_path / "runs" / run / "results.json").is_file()
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 10


def test_committed_notebook_was_run_top_to_bottom_with_outputs():
    assert NOTEBOOK.stat().st_size < MAX_NOTEBOOK_BYTES
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # One uninterrupted run: execution counts 1, 2, 3, ... in cell order.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:80]
    text = outputs_text(nb)
    for name in STRATEGY_NAMES:
        assert f"{name:20s} accuracy" in text
    # The committed run used the notebook's own parameters, not a test's.
    assert "SUPERLINK = None" in parameters_cell(nb).source


def main() -> None:
    """Execute the notebook with its own parameters on a private SuperLink; save it."""
    import tempfile

    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory() as tmp, simulation_superlink(Path(tmp)) as link:
        # SUPERLINK = None in the notebook: flwr uses FLWR_HOME's default connection,
        # which the harness set to this private SuperLink.
        execute(nb, link.env, timeout=3600)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({NOTEBOOK.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
