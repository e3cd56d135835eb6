"""The analysis notebooks run out of the box on ``make demo``'s outputs (the ``demo_outputs`` fixture, passed through
``SRESOLVE_OUTPUTS``) and print sensible numbers. They are stored without outputs."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str) -> tuple[str, int]:
    """Run ``notebooks/<name>.ipynb`` in a fresh kernel (cwd = notebooks/); its printed text and number of PNGs."""
    import nbformat
    from nbclient import NotebookClient

    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} is stored with outputs"
    first = nb.cells[0].source
    assert (
        'OUTPUTS = Path(os.environ.get("SRESOLVE_OUTPUTS", "../outputs"))' in first and 'RUN = "demo_safmn_x4"' in first
    )
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    pngs = sum("image/png" in o.get("data", {}) for o in outputs)
    return text, pngs


@pytest.fixture
def notebook_env(demo_outputs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kernels inherit this process's environment: point them at the demo outputs."""
    monkeypatch.setenv("SRESOLVE_OUTPUTS", str(demo_outputs))
    monkeypatch.delenv("SRESOLVE_SWEEP", raising=False)
    return demo_outputs


def test_compare_models_notebook(notebook_env: Path) -> None:
    text, pngs = _execute("compare_models")
    psnr = [float(v) for v in re.findall(r"PSNR (-?[\d.]+|inf|nan) dB", text)]
    assert len(psnr) == 8 and all(math.isfinite(v) and v > 5 for v in psnr)  # 2 images x 2 crops x (bicubic, model)
    assert pngs == 2 and "| safmn | ×4 |" in text and "demo_safmn_x4: SAFMN x4" in text


def _sweep(root: Path) -> Path:
    """A finished two-job α sweep as ``sresolve-train --multirun`` leaves it (config, results, overrides)."""
    (root / "multirun.yaml").parent.mkdir(parents=True)
    (root / "multirun.yaml").write_text("{}")
    for i, alpha in enumerate([0.01, 0.0]):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True)
        cfg: dict[str, Any] = {"run_name": "hat_ablation_alpha", "scale": 4, "data": {"name": "samples"}}
        cfg["model"] = {"arch": "hat", "alpha": alpha}
        (job / "config.yaml").write_text(yaml.safe_dump(cfg))
        metrics = {"val/samples/psnr": 25.0 + alpha * 100, "val/samples/ssim": 0.7}
        (job / "results.json").write_text(json.dumps({"run_name": "hat_ablation_alpha", "step": 2, "metrics": metrics}))
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.alpha={alpha}", "model.embed_dim=24"]))
    return root


def test_training_curves_notebook(notebook_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRESOLVE_SWEEP", str(_sweep(tmp_path / "sweep")))
    text, pngs = _execute("training_curves")
    series = ast.literal_eval(re.search(r"logged series: (\[.*\])", text).group(1))
    assert {"train/loss", "val/samples/psnr"} <= set(series)
    final = re.search(r"final: step (\d+), .*val/samples/psnr = ([\d.]+)", text)
    assert final and int(final.group(1)) == 40 and float(final.group(2)) > 5
    assert pngs == 1
    assert "| α (CAB weight) | samples PSNR | samples SSIM |" in text and "| 0.01 | 26.00 | 0.7000 |" in text


def test_cka_notebook(notebook_env: Path) -> None:
    text, pngs = _execute("cka")
    diag = ast.literal_eval(re.search(r"^diagonal: (\[.*\])", text, re.M).group(1))
    assert len(diag) == 2 and diag == pytest.approx([1.0, 1.0], abs=1e-6)  # the demo SAFMN has 2 blocks
    rand = ast.literal_eval(re.search(r"random init, diagonal: (\[.*\])", text).group(1))
    assert len(rand) == 2 and all(-0.2 < v < 0.999 for v in rand)
    assert "blocks (2 layers) vs inside (8 layers)" in text and pngs == 3
