"""``sresolve-report``: paper-layout tables from real run folders (the demo outputs, a tiny HAT ablation multirun) and
from synthetic ones for the layouts that have no producer yet (arbitrary scales, efficiency CSV)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sresolve.cli.report import main
from sresolve.results import (
    arbitrary_scale_tables,
    benchmark_table,
    build_report,
    efficiency_table,
    find_runs,
    find_test_runs,
    read_test_run,
    training_curves,
    varied_settings,
)
from test_sweeps import TINY_HAT as SWEEP_TINY_HAT

PROTOCOL = "PSNR/SSIM on Y (BT.601 studio), 8-bit rounded, shave {s} px, mean of per-image values"

TINY_HAT = [*SWEEP_TINY_HAT, "val.log_images=0"]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_report_of_the_demo_outputs(demo_outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``make demo``'s folder: one benchmark table (bicubic and SAFMN ×4 on the held-out photographs), the numbers
    those of ``sresolve-test``'s results.csv, the protocol underneath; the single training run makes no ablation."""
    test_csv = _csv_rows(demo_outputs / "test" / "demo_safmn_x4" / "results.csv")
    assert {r["scale"] for r in test_csv} == {"4"} and {r["modcrop"] for r in test_csv} == {"4"}
    out = tmp_path / "report"
    assert main([str(demo_outputs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### Benchmark results" in printed and "Ablation" not in printed
    rows = _csv_rows(out / "benchmark.csv")
    assert [(r["Method"], r["Scale"]) for r in rows] == [("bicubic", "×4"), ("safmn", "×4")]
    for row, ref in zip(rows, test_csv, strict=True):
        assert float(row["samples PSNR"]) == pytest.approx(float(ref["psnr"]), abs=1e-6)
        assert float(row["samples SSIM"]) == pytest.approx(float(ref["ssim"]), abs=1e-6)
    report = (out / "report.md").read_text()
    assert f"Protocol: {PROTOCOL.format(s=4)}; GT modcrop 4" in report
    assert "| Method | Scale | samples PSNR | samples SSIM |" in report
    curves = training_curves(demo_outputs / "train" / "demo_safmn_x4")
    assert curves["val/samples/psnr"][-1][0] == 39 and len(curves["train/loss"]) >= 4
    assert main([str(tmp_path / "nothing")]) == 2


def test_ablation_table_from_a_real_tiny_multirun(
    samples_root: Path, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """``experiment=hat_ablation_alpha`` cut to two α values: the swept key is found in ``.hydra/overrides.yaml``
    (the fixed overrides, equal in both jobs, are not), named as in HAT Table 4, and each row holds that job's final
    validation metrics."""
    sweep = tmp_path / "sweep"
    run_cli(
        "train",
        "experiment=hat_ablation_alpha",
        "model.alpha=0.1,0",
        *TINY_HAT,
        f"paths.data_dir={samples_root.parent}",
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    runs = find_runs(sweep)
    keys, settings = varied_settings(runs)
    assert keys == ["model.alpha"] and [s["model.alpha"] for s in settings] == [0.1, 0]
    tables = build_report([sweep])
    assert len(tables) == 1
    table = tables[0]
    assert table.columns == ["α (CAB weight)", "samples PSNR", "samples SSIM"]
    assert [r[0] for r in table.rows] == [0, 0.1]  # sorted by the setting
    by_alpha = {r.path.name: r for r in runs}
    assert table.rows[0][1] == pytest.approx(by_alpha["1"].metrics["val/samples/psnr"])
    assert table.rows[1][2] == pytest.approx(by_alpha["0"].metrics["val/samples/ssim"])
    md = table.markdown()
    assert "Ablation: hat_ablation_alpha (2 runs)" in md and "| 0.1 |" in md
    assert f"Protocol: {PROTOCOL.format(s=4)}; GT modcrop 4; validation data samples" in md
    assert "value at the end of training (step 2)" in md


def _fake_run(
    folder: Path,
    cfg: dict[str, Any],
    metrics: dict[str, float],
    overrides: list[str] | None = None,
    pretrain: dict[str, Any] | None = None,
) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({**cfg, "pretrain": pretrain or {"strategy": "none"}}))
    payload = {"run_name": cfg.get("run_name"), "step": 100, "metrics": metrics, "best": {}, "pretrain": pretrain}
    (folder / "results.json").write_text(json.dumps(payload))
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _cfg(scale: int = 2, **model: Any) -> dict[str, Any]:
    return {
        "run_name": "hma_ablation_modules",
        "scale": scale,
        "seed": 10,
        "paths": {"output_dir": "/somewhere/else"},
        "data": {"name": "df2k"},
        "val": {"crop_border": None, "y_channel": True},
        "model": {"arch": "hma", "embed_dim": 180, **model},
    }


def test_boolean_module_ablation_and_cross_scale_sweeps(tmp_path: Path) -> None:
    """HMA supplement Table 2 (FAB × GAB) with ✓/✗, the on-state first; a config-diff fallback when runs have no
    overrides; and a sweep of cross-scale initialisations becomes the supplement Table 1 layout."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "multirun.yaml").write_text("{}")
    for i, (fab, gab) in enumerate([(False, False), (True, True), (False, True), (True, False)]):
        psnr = 38.0 + 0.1 * fab + 0.2 * gab
        _fake_run(
            modules / str(i),
            _cfg(use_fab=fab, use_gab=gab),
            {"val/psnr": psnr, "val/Set5/psnr": psnr, "val/Set5/ssim": 0.96},
            [f"model.use_fab={str(fab).lower()}", f"model.use_gab={str(gab).lower()}", "model.embed_dim=180"],
        )
    (table,) = build_report([modules])
    assert table.columns == ["FAB", "GAB", "Set5 PSNR", "Set5 SSIM"]
    assert [r[:3] for r in table.rows] == [
        [True, True, pytest.approx(38.3)],
        [True, False, pytest.approx(38.1)],
        [False, True, pytest.approx(38.2)],
        [False, False, pytest.approx(38.0)],
    ]
    md = table.markdown()
    assert "| ✓ | ✗ | 38.10 | 0.9600 |" in md and "shave 2 px" in md and "validation data df2k" in md
    assert main([str(modules), "--out", str(tmp_path / "r")]) == 0
    assert _csv_rows(tmp_path / "r" / "ablation_hma_ablation_modules.csv")[0]["FAB"] == "true"

    # no .hydra/overrides.yaml: the flattened configs are compared (paths, names, tags ignored)
    diff = tmp_path / "diff"
    for i, ws in enumerate([16, 8]):
        _fake_run(diff / str(i), {**_cfg(window_size=ws), "paths": {"output_dir": f"/x/{i}"}}, {"val/Set5/psnr": 30.0})
    keys, settings = varied_settings(find_runs(diff))
    assert keys == ["model.window_size"] and settings == [{"model.window_size": 16}, {"model.window_size": 8}]
    assert build_report([diff])[0].columns == ["window size", "Set5 PSNR"]

    cross = tmp_path / "cross"
    for i, (scale, source) in enumerate([(2, None), (4, None), (4, 2)]):
        pretrain = {"strategy": "cross_scale" if source else "none", "source_scale": source}
        _fake_run(cross / str(i), _cfg(scale), {"val/psnr": 30.0 + scale + (source or 0)}, [], pretrain)
    (t1,) = build_report([cross])
    assert t1.stem == "pretrain_cross_scale" and t1.columns == ["target \\ init (val/psnr)", "none", "from ×2"]
    assert t1.rows == [["×2", 32.0, None], ["×4", 34.0, 36.0]]
    assert "shave 4 px" in t1.markdown()


def _fake_test_run(folder: Path, rows: list[tuple[str, str, float, float, float | None]], md: str = "") -> None:
    """A results.csv as ``sresolve-test`` writes it; ``scale`` None = an older file without the column."""
    folder.mkdir(parents=True)
    with_scale = all(r[4] is not None for r in rows)
    with (folder / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "images", "psnr", "ssim", "protocol", *(["scale"] if with_scale else [])])
        for dataset, method, psnr, ssim, scale in rows:
            s = int(scale) if scale and float(scale).is_integer() else scale
            w.writerow([dataset, method, 5, psnr, ssim, PROTOCOL.format(s=s or 4), *([scale] if with_scale else [])])
    if md:
        (folder / "results.md").write_text(md)


def test_benchmark_table_layout_and_scale_inference(tmp_path: Path) -> None:
    """HAT Table 6 layout: rows grouped by scale with bicubic first, PSNR/SSIM column pairs in the papers' data set
    order; the scale of files without a scale column comes from .hydra/config.yaml, the folder name or the modcrop."""
    _fake_test_run(tmp_path / "hat_x2", [("Urban100", "hat", 33.0, 0.93, None), ("Set5", "hat", 38.6, 0.963, None)])
    _fake_test_run(tmp_path / "swinir", [("Set5", "bicubic", 33.7, 0.93, None), ("Set5", "swinir", 38.4, 0.96, None)])
    (tmp_path / "swinir" / ".hydra").mkdir()
    (tmp_path / "swinir" / ".hydra" / "config.yaml").write_text("scale: 2\ndata: {modcrop: 12}\n")
    _fake_test_run(
        tmp_path / "mine",
        [("Set5", "bicubic", 28.4, 0.81, None), ("Set5", "safmn", 32.0, 0.89, None)],
        md="table\n\nProtocol: ...; GT modcrop 4; weights w.pth\n",
    )
    _fake_test_run(tmp_path / "other_x4", [("Set5", "safmn", 31.0, 0.88, 4)])  # same method, other run
    records = find_test_runs(tmp_path)
    assert {r.run_name: r.scale for r in records} == {"hat_x2": 2, "swinir": 2, "mine": 4, "other_x4": 4}
    table = benchmark_table(records)
    assert table.columns == ["Method", "Scale", "Set5 PSNR", "Set5 SSIM", "Urban100 PSNR", "Urban100 SSIM"]
    assert [r[:2] for r in table.rows] == [
        ["bicubic", "×2"],
        ["hat", "×2"],
        ["swinir", "×2"],
        ["bicubic", "×4"],
        ["safmn (mine)", "×4"],
        ["safmn (other_x4)", "×4"],
    ]
    assert table.rows[2][4:] == [None, None]  # SwinIR not tested on Urban100
    md = table.markdown()
    assert "| hat | ×2 | 38.60 | 0.9630 | 33.00 | 0.9300 |" in md and "| swinir | ×2 | 38.40 | 0.9600 | – | – |" in md
    assert "GT modcrop 12 (runs: swinir)" in md and "GT modcrop 4 (runs: mine" in md


def test_arbitrary_scale_table_and_efficiency_csv(tmp_path: Path) -> None:
    """Several scales in one results.csv (an arbitrary-scale evaluator's output) → Table 3 layout per data set, with
    non-integer scales; a complexity CSV is tabulated with whatever columns it has."""
    rows = [("Set5", m, 40.0 - s - (m == "bicubic") * 3, 0.9, s) for m in ("bicubic", "eqsr") for s in (1.5, 2, 3.5)]
    rows += [("Urban100", "eqsr", 30.0, 0.8, 2.0)]
    _fake_test_run(tmp_path / "tests" / "eqsr_arbitrary", rows)
    records = read_test_run(tmp_path / "tests" / "eqsr_arbitrary")
    set5, urban = arbitrary_scale_tables(records)
    assert set5.title == "Arbitrary-scale results on Set5 (PSNR (dB))"
    assert set5.columns == ["Method", "×1.5", "×2", "×3.5"]
    assert set5.rows == [["bicubic", 35.5, 35.0, 33.5], ["eqsr", 38.5, 38.0, 36.5]]
    assert urban.columns == ["Method", "×2"] and urban.stem == "arbitrary_scale_Urban100"
    assert "| eqsr | 38.50 | 38.00 | 36.50 |" in set5.markdown()
    complexity = tmp_path / "complexity.csv"
    complexity.write_text(  # the columns of sresolve-analyze complexity --csv (raw counts), plus a comment line
        "# float32, 1 thread\n"
        "model,scale,params,input_w,input_h,output_w,output_h,macs,activations,peak_memory_mib,latency_ms,device\n"
        "SAFMN,4,239532,320,180,1280,720,13560000000,75600000,48.25,101.3,cpu\n"
        "HAT,4,20772507,320,180,1280,720,817300000000,1350000000,,9.871,cpu\n"
    )
    eff = efficiency_table(complexity)
    assert eff.columns[:3] == ["model", "scale", "params"] and len(eff.columns) == 12
    assert eff.rows[1][:3] == ["HAT", 4, 20772507] and eff.rows[1][9] is None
    md = eff.markdown()
    assert "| HAT | 4 | 20.77M | 320 | 180 | 1280 | 720 | 817.30G | 1.35G | – | 9.9 | cpu |" in md
    assert "| SAFMN | 4 | 239.53K |" in md and "float32, 1 thread" in md
    out = tmp_path / "out"
    assert main([str(tmp_path / "tests"), "--complexity", str(complexity), "--out", str(out)]) == 0
    stems = sorted(p.stem for p in out.glob("*.csv"))
    assert stems == ["arbitrary_scale_Set5", "arbitrary_scale_Urban100", "benchmark", "efficiency"]
    assert _csv_rows(out / "arbitrary_scale_Set5.csv")[1] == {
        "Method": "eqsr",
        "×1.5": "38.5",
        "×2": "38.0",
        "×3.5": "36.5",
    }
    assert main([str(tmp_path / "out")]) == 1  # nothing reportable there
