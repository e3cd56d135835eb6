"""AMRSR's ablation sweeps run end to end (spec archs_eqsr_amrsr.md B5, B12): supplement Table 4 (subvector
division, ``experiment=amrsr_ablation_division``) and supplement Table 3 (number of references,
``experiment=amrsr_ablation_refs``) as real Hydra multiruns of a tiny AMRSR (random VGG, 2 iterations: one
reconstruction-only warm-up step, then one GAN step with its 2 discriminator steps), each job validated, and each
sweep turned into its paper table by ``sresolve-report``."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import tiny_run
from sresolve.cli.report import main as report_main
from test_sweeps import run_sweep

#: a tiny AMRSR, 2 iterations (1 warm-up + 1 GAN), validation and a checkpoint at the end, references cropped to 48 px.
TINY_AMRSR = [
    "model.n_feats=8",
    "model.n_feat_blocks=1",
    "model.n_blocks=[1,1,1]",
    "model.vgg_weights=random",
    *tiny_run(batch_size=1),
    "model.gan.warmup_iter=1",
    "model.sched.milestones=[1000]",
    "trainer.log_every_n_steps=1",
    "data.ref_patch_size=48",
    "export=false",
    "val.log_images=0",
]


@pytest.fixture(scope="module")
def multiref_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded multi-reference set with 48×64 validation crops (LR 12×16: cheap matching with 8 references)."""
    from sresolve.data.multiref import materialize_multiref_samples

    root = tmp_path_factory.mktemp("amrsr_ablation_data") / "samples"
    materialize_multiref_samples(root, val_size=(48, 64))
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _run_and_report(
    run_cli: Callable[..., Any], experiment: str, root: Path, tmp_path: Path, key: str
) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]], str]:
    """Run the sweep, check every job, run ``sresolve-report`` on it. Returns the jobs by setting (their saved config
    and final validation metrics), the rows of the ablation CSV and report.md."""
    section, name = key.split(".")
    jobs: dict[str, dict[str, Any]] = {}
    for job, saved, psnr in run_sweep(run_cli, experiment, TINY_AMRSR, root, tmp_path):
        assert saved["run_name"] == experiment and saved["model"]["n_subvectors"] == 4
        rows = _csv(job / "csv" / "metrics.csv")
        ssim = [float(r["val/samples/ssim"]) for r in rows if r.get("val/samples/ssim")]
        assert len(psnr) == 1 and psnr[0] > 5.0 and len(ssim) == 1 and 0.0 < ssim[0] <= 1.0
        phases = [float(r["train/gan_phase"]) for r in rows if r.get("train/gan_phase")]
        assert phases == [0.0, 1.0]  # the warm-up step, then a GAN step ...
        assert [r for r in rows if r.get("train/d_loss")] and [r for r in rows if r.get("train/l_adv")]  # ... with D
        assert (job / "checkpoints" / "last.ckpt").is_file()
        jobs[str(saved[section][name])] = {"psnr": psnr[0], "ssim": ssim[0], "cfg": saved}
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    return jobs, _csv(out / f"ablation_{experiment}.csv"), (out / "report.md").read_text()


def _check_rows(rows: list[dict[str, str]], column: str, jobs: dict[str, dict[str, Any]]) -> None:
    """The table's first column is the paper's name of the swept key, one row per job, the cells that job's metrics."""
    assert list(rows[0]) == [column, "samples PSNR", "samples SSIM"]
    assert sorted(r[column] for r in rows) == sorted(jobs)
    for row in rows:
        job = jobs[row[column]]
        assert float(row["samples PSNR"]) == pytest.approx(job["psnr"], abs=1e-6)
        assert float(row["samples SSIM"]) == pytest.approx(job["ssim"], abs=1e-6)


def test_subvector_division_sweep_and_table(multiref_root: Path, tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    """Supp. Table 4: ``model.subvector_division`` input, none, refs, both (4 jobs, 2 references per sample as in
    experiment=amrsr_samples); the report's table has the column "subvector division"."""
    jobs, rows, md = _run_and_report(
        run_cli, "amrsr_ablation_division", multiref_root, tmp_path, "model.subvector_division"
    )
    assert set(jobs) == {"input", "none", "refs", "both"}
    assert {j["cfg"]["data"]["n_refs"] for j in jobs.values()} == {2}
    _check_rows(rows, "subvector division", jobs)
    assert [r["subvector division"] for r in rows] == ["both", "input", "none", "refs"]  # sorted by the setting
    assert "Ablation: amrsr_ablation_division (4 runs)" in md and "| subvector division |" in md
    # the four matchers differ, so the runs do too (random VGG, same seed and data otherwise)
    assert len({round(j["psnr"], 6) for j in jobs.values()}) > 1


def test_number_of_references_sweep_and_table(multiref_root: Path, tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    """Supp. Table 3: ``data.n_refs`` 1, 2, 4, 8 for training and validation (8 = the stereo view and all 7
    distractors of the embedded set); the report's table has the column "references", rows in numeric order."""
    jobs, rows, md = _run_and_report(run_cli, "amrsr_ablation_refs", multiref_root, tmp_path, "data.n_refs")
    assert set(jobs) == {"1", "2", "4", "8"}
    assert {j["cfg"]["model"]["subvector_division"] for j in jobs.values()} == {"input"}  # the paper's default
    _check_rows(rows, "references", jobs)
    assert [r["references"] for r in rows] == ["1", "2", "4", "8"]
    assert "Ablation: amrsr_ablation_refs (4 runs)" in md and "| references |" in md
    # validation used n_refs references per image: the saved configs and the data set agree
    from sresolve.data.multiref import MultiRefEvalDataset

    for n in jobs:
        ds = MultiRefEvalDataset("samples", multiref_root, n_refs=int(n))
        assert [len(ds[i]["refs"]) for i in range(len(ds))] == [int(n)] * 2
    overrides = yaml.safe_load((tmp_path / "sweep" / "3" / ".hydra" / "overrides.yaml").read_text())
    assert "data.n_refs=8" in overrides
