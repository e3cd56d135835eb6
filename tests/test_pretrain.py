"""The ``pretrain`` config group: none / imagenet / finetune / cross_scale, the ImageNet data module, and the
cross-scale table sweep (HMA supplement Table 1) with its collector. Tiny networks, tiny images, one step a run."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from conftest import TINY_SAFMN, tiny_run
from sresolve.cli.train import build_module, initialise, train
from sresolve.config import ConfigError, split_model_cfg

STEPS = tiny_run(iters=1)
TINY_HAT = [
    "model=hat",
    "model.embed_dim=12",
    "model.depths=[1]",
    "model.num_heads=[2]",
    "model.window_size=8",
    "model.squeeze_factor=6",
]
TINY_HMA = ["model.embed_dim=32", "model.depths=[1]", "model.num_heads=[2]", "model.window_size=8"]


def _photo() -> torch.Tensor:
    from sresolve.data.samples import load_sample

    return torch.from_numpy(load_sample("astronaut")).permute(2, 0, 1).float() / 255


def _save(path: Path, img: torch.Tensor | np.ndarray) -> None:
    """Write an image with Pillow, format from the suffix in any case (``.JPEG``, ``.PNG``)."""
    arr = img if isinstance(img, np.ndarray) else (img.permute(1, 2, 0) * 255).round().byte().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG"}[path.suffix.lower()]
    Image.fromarray(arr).save(path, format=fmt, quality=95)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Crops of a bundled photograph in the DF2K, Set5 and ImageNet layouts (96 px training images, 48 px Set5)."""
    root = tmp_path_factory.mktemp("pretrain_data")
    photo = _photo()
    crops = [photo[:, 100 + 60 * i : 196 + 60 * i, 150 + 20 * i : 246 + 20 * i] for i in range(3)]
    _save(root / "DF2K/DIV2K_train_HR/0001.png", crops[0])
    _save(root / "DF2K/DIV2K_train_HR/0002.png", crops[1])
    _save(root / "DF2K/Flickr2K_HR/000001.png", crops[2])
    _save(root / "benchmark/Set5/HR/baby.png", photo[:, 200:248, 200:248])
    _save(root / "ImageNet/train/n01440764/n01440764_1.JPEG", crops[0])
    _save(root / "ImageNet/train/n01443537/n01443537_2.JPEG", crops[1])
    _save(root / "ImageNet/train/n01443537/n01443537_3.JPEG", photo[:, :40, :40])  # too small: skipped
    return root


@pytest.fixture(scope="module")
def x2_source(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny SAFMN x2 run on the DF2K layout (checkpoints/last.ckpt, weights/net_g_latest.*)."""
    from conftest import compose_cfg

    out = tmp_path_factory.mktemp("x2_source")
    train(compose_cfg("train", [*TINY_SAFMN, *STEPS, "data=df2k", "scale=2"], out, data_dir=data_dir))
    return out


def _assert_state(net: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    own = net.state_dict()
    assert set(own) == set(expected)
    for key, value in expected.items():
        assert torch.equal(own[key], value), key


# ------------------------------------------------------------------------------------------------------ configs
def test_pretrain_options_compose_to_their_recipes(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    none = make_cfg("train", [], tmp_path / "none")
    assert (none.pretrain.strategy, none.pretrain.path) == ("none", None)
    imagenet = make_cfg("train", ["model=hat", "pretrain=imagenet"], tmp_path / "imagenet")
    assert imagenet.data._target_ == "sresolve.data.ImageNetSRDataModule" and imagenet.data.name == "imagenet"
    assert (imagenet.model.total_iter, imagenet.model.optim.lr, imagenet.model.sched.gamma) == (800000, 2e-4, 0.5)
    assert list(imagenet.model.sched.milestones) == [300000, 500000, 650000, 700000, 750000]
    assert imagenet.run_name == "hat_x4_imagenet"
    for model, lr in (("hat", 1e-5), ("hat_l", 1e-5), ("hma", 5e-6), ("safmn", 1e-4)):
        ft = make_cfg("train", [f"model={model}", "pretrain=finetune"], tmp_path / model)
        assert (ft.model.optim.lr, ft.model.total_iter) == (lr, 250000), model
        assert list(ft.model.sched.milestones) == [125000, 200000, 225000, 240000]
        assert "finetune_lr" not in split_model_cfg(ft.model)[1]  # a recipe key, never a network argument
    cross = make_cfg("train", ["model=hat", "pretrain=cross_scale", "data=df2k"], tmp_path / "cross")
    assert (cross.model.optim.lr, cross.model.total_iter, cross.pretrain.source_scale) == (1e-4, 250000, 2)
    assert cross.pretrain.path.endswith("train/hat_x2_df2k/weights/net_g_latest.pth")
    x3 = make_cfg("train", ["model=hat", "pretrain=cross_scale", "pretrain.source_scale=3"], tmp_path / "x3")
    assert x3.pretrain.path.endswith("train/hat_x3_samples/weights/net_g_latest.pth")
    table = make_cfg("train", ["experiment=hma_table1_cross_scale"], tmp_path / "table")
    assert table.model.arch == "hma" and table.pretrain.strategy == "cross_scale"
    sweeper = table.hydra.sweeper
    assert list(sweeper.params) == ["pretrain.source_scale", "scale"]  # the from-scratch column is swept first
    assert sweeper.params["pretrain.source_scale"] == "none,2,3,4" and sweeper.max_batch_size == 3


def test_missing_or_stray_weights_paths_fail_at_start_naming_the_key(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    base = [*TINY_SAFMN, *STEPS]
    cases = [
        (["pretrain=finetune"], r"pretrain=finetune needs pretrain\.path=<weights file>"),
        (["pretrain=finetune", f"pretrain.path={tmp_path / 'nope.pth'}"], r"pretrain\.path=.*nope\.pth does not exist"),
        (["pretrain=finetune", f"pretrain.path={tmp_path}"], r"pretrain\.path=.* is a folder"),
        (["pretrain=cross_scale"], r"pretrain\.path=.*safmn_x2_samples.*does not exist \(the x2 source run"),
        (["pretrain.path=w.pth"], r"pretrain\.path is set but pretrain=none loads no weights"),
        (["pretrain=cross_scale", "pretrain.source_scale=two"], r"pretrain\.source_scale must be"),
        (["pretrain=finetune", "~model.finetune_lr"], r"model\.finetune_lr"),
    ]
    for i, (overrides, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        with pytest.raises(ConfigError, match=message):
            train(make_cfg("train", [*base, *overrides], out))
        assert not (out / "checkpoints").exists()  # before any training


# ------------------------------------------------------------------------------------------------------ finetune
def test_finetune_loads_each_checkpoint_format(
    x2_source: Path,
    data_dir: Path,
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sresolve.checkpoints import export_basicsr

    exported = torch.load(x2_source / "weights" / "net_g_latest.pth", weights_only=True)
    ema, raw = exported["params_ema"], exported["params"]
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # one Adam step: the two are distinguishable
    official = export_basicsr(tmp_path / "official_params_only.pth", raw)  # a release holding only 'params'
    cases = [
        (x2_source / "checkpoints" / "last.ckpt", [], ema),  # Lightning checkpoint: the EMA net
        (x2_source / "weights" / "net_g_latest.pth", [], ema),
        (x2_source / "weights" / "net_g_latest.safetensors", [], ema),
        (official, [], raw),  # BasicSR falls back from params_ema to params
        (x2_source / "weights" / "net_g_latest.pth", ["pretrain.key=params"], raw),
    ]
    base = [*TINY_SAFMN, *STEPS, "data=df2k", f"paths.data_dir={data_dir}", "scale=2", "pretrain=finetune"]
    for i, (path, extra, expected) in enumerate(cases):
        cfg = make_cfg("train", [*base, f"pretrain.path={path}", *extra], tmp_path / f"ft{i}")
        module = build_module(cfg)
        summary = initialise(cfg, module, tmp_path / f"ft{i}")
        assert summary is not None and (summary["loaded"], summary["new"]) == (len(expected), 0), path
        _assert_state(module.net, expected)
        _assert_state(module.net_ema, expected)
    # a different scale is not a fine-tuning: strict, the error names the keys and both shapes
    wrong = make_cfg(
        "train",
        [*TINY_SAFMN, *STEPS, "data=df2k", "scale=4", "pretrain=finetune", f"pretrain.path={cases[1][0]}"],
        tmp_path / "wrong",
    )
    with pytest.raises(ConfigError, match=r"shape mismatch: to_img\.0\.weight file \(12, 8, 3, 3\) vs model \(48, 8"):
        train(wrong)
    # the same file through pretrain=cross_scale: SAFMN's upsampler is to_img.*, everything else transfers
    cross = make_cfg(
        "train",
        [*TINY_SAFMN, *STEPS, "scale=4", "pretrain=cross_scale", f"pretrain.path={cases[1][0]}"],
        tmp_path / "cross",
    )
    module = build_module(cross)
    summary = initialise(cross, module, tmp_path / "cross")
    assert summary is not None and (summary["skipped"], summary["new"]) == (2, 2)
    _assert_state(module.net, {**module.net.state_dict(), **{k: v for k, v in ema.items() if "to_img" not in k}})
    # end to end: the run starts from the file, reports it, trains and records its results
    cfg = make_cfg("train", [*base, f"pretrain.path={cases[0][0]}"], tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="sresolve.train"):
        metrics = train(cfg)
    assert math.isfinite(metrics["val/psnr"])
    assert f"loaded {len(ema)} tensors, skipped 0 from the file, newly initialised 0" in caplog.text
    report = json.loads((tmp_path / "run" / "pretrain_report.json").read_text())
    assert report["strategy"] == "finetune" and sorted(report["report"]["loaded"]) == sorted(ema)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["pretrain"]["path"].endswith("last.ckpt") and results["scale"] == 2


# ------------------------------------------------------------------------------------------------------ cross-scale
def _hat_source(make_cfg: Callable[..., DictConfig], tmp_path: Path, scale: int, *extra: str) -> tuple[Path, dict]:
    """Weights of a tiny HAT at ``scale``, shifted by +1 so they cannot equal a fresh initialisation."""
    from sresolve.checkpoints import export_basicsr

    module = build_module(make_cfg("train", [*TINY_HAT, *STEPS, f"scale={scale}", *extra], tmp_path / "src"))
    state = {k: v + 1 if v.is_floating_point() else v for k, v in module.net.state_dict().items()}
    path = export_basicsr(tmp_path / f"hat_x{scale}.pth", state, state)
    return path, state


@pytest.mark.parametrize(("source", "target"), [(2, 4), (2, 3), (4, 2)])
def test_cross_scale_transfers_the_body_and_reinitialises_the_upsampler(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture, source: int, target: int
) -> None:
    path, state = _hat_source(make_cfg, tmp_path, source)
    init = ["pretrain=cross_scale", f"pretrain.source_scale={source}", f"pretrain.path={path}"]
    cfg = make_cfg("train", [*TINY_HAT, *STEPS, f"scale={target}", *init], tmp_path / "run")
    module = build_module(cfg)
    with caplog.at_level(logging.INFO, logger="sresolve.train"):
        summary = initialise(cfg, module, tmp_path / "run")
    own, ema = module.net.state_dict(), module.net_ema.state_dict()
    upsampler = sorted(k for k in own if k.startswith("upsample."))
    assert upsampler  # x2/x3: upsample.0.*, x4: upsample.0.*, upsample.2.*
    for key, value in own.items():
        if key.startswith("upsample."):
            assert key not in state or value.shape != state[key].shape or not torch.equal(value, state[key]), key
        else:  # conv_first, the body, conv_after_body, conv_before_upsample, conv_last: from the source
            assert torch.equal(value, state[key]) and torch.equal(ema[key], state[key]), key
    report = json.loads((tmp_path / "run" / "pretrain_report.json").read_text())["report"]
    assert sorted(report["new"]) == upsampler
    assert sorted(report["skipped"]) == sorted(k for k in state if k.startswith("upsample."))
    assert {v["reason"] for v in report["skipped"].values()} == {"excluded"}
    assert summary is not None and summary["loaded"] == len(own) - len(upsampler)
    if (source, target) == (2, 3):
        assert "skipped (excluded): upsample.0.weight file (256, 64, 3, 3) vs model (576, 64, 3, 3)" in caplog.text
    if (source, target) == (4, 2):
        assert "skipped (excluded): upsample.2.weight file (256, 64, 3, 3) vs absent from the model" in caplog.text
    assert f"new: {upsampler[0]}" in caplog.text and "loaded: " in caplog.text


def test_cross_scale_fails_naming_keys_it_did_not_expect(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    path, _ = _hat_source(make_cfg, tmp_path, 2, "model.embed_dim=16", "model.squeeze_factor=8")
    cfg = make_cfg(
        "train", [*TINY_HAT, *STEPS, "scale=4", "pretrain=cross_scale", f"pretrain.path={path}"], tmp_path / "run"
    )
    with pytest.raises(ConfigError, match=r"only keys matching \['upsample\.\*', 'to_img\.\*'\] may differ"):
        initialise(cfg, build_module(cfg), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"conv_first\.weight file \(16, 3, 3, 3\) vs model \(12, 3, 3, 3\)"):
        train(cfg)
    # pretrain.strict=false is BasicSR's strict_load_g: false: what fits is loaded, the rest reported, never silent
    loose = make_cfg(
        "train",
        [*TINY_HAT, *STEPS, "scale=4", "pretrain=cross_scale", f"pretrain.path={path}", "pretrain.strict=false"],
        tmp_path / "loose",
    )
    summary = initialise(loose, build_module(loose), tmp_path / "loose")
    assert summary is not None and summary["loaded"] > 0 and summary["skipped"] > 2
    skipped = json.loads((tmp_path / "loose" / "pretrain_report.json").read_text())["report"]["skipped"]
    assert skipped["conv_first.weight"] == {"file": [16, 3, 3, 3], "model": [12, 3, 3, 3], "reason": "shape"}


# ------------------------------------------------------------------------------------------------------ ImageNet
def test_imagenet_datamodule_skips_small_images_and_degrades_patches_with_matlab_bicubic(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sresolve.data.datasets as datasets
    from sresolve.data import ImageNetSRDataModule
    from sresolve.data.degradation import imresize

    photo = _photo()
    root = tmp_path / "ILSVRC"
    kept = {
        "train/n01440764/n01440764_10026.JPEG": photo[:, :90, :100],
        "train/n01443537/n01443537_1.jpg": photo[:, 100:164, 100:164],  # exactly the HR patch
        "train/n01484850/more/n01484850_7.PNG": photo[:, 200:270, 50:130],  # deeper folder, upper-case suffix
    }
    small = {
        "train/n01440764/n01440764_2.JPEG": photo[:, :30, :200],  # too low
        "train/n01443537/n01443537_9.png": photo[:, :20, :20],
    }
    for rel, img in {**kept, **small, "val/ILSVRC2012_val_00000001.JPEG": photo[:, :100, :100]}.items():
        _save(root / rel, img)
    (root / "train" / "LOC_synset_mapping.txt").write_text("n01440764 tench\n")  # not an image: ignored

    def no_decoding(path: object) -> None:
        raise AssertionError(f"{path} decoded while scanning: sizes must come from the headers")

    monkeypatch.setattr(datasets, "read_image_uint8", no_decoding)
    dm = ImageNetSRDataModule(
        root=root, scale=2, lr_patch_size=32, batch_size=2, num_workers=0, use_hflip=False, use_rot=False
    )
    with caplog.at_level(logging.INFO, logger="sresolve.data.datasets"):
        dm.setup("fit")
    monkeypatch.undo()
    ds = dm.train_set
    assert ds is not None and not ds.cached
    assert sorted(str(p.relative_to(root)) for p in ds.hr_paths) == sorted(kept)  # train/ only, val/ left out
    assert sorted(str(p.relative_to(root)) for p in ds.skipped) == sorted(small)
    assert "skipped 2 of 5 images smaller than the 64x64 HR patch" in caplog.text
    for i in range(3):
        item = ds[(i, 1234 + i)]
        assert item["hr"].shape == (3, 64, 64) and item["lr"].shape == (3, 32, 32)
        hr8 = torch.round(item["hr"] * 255).to(torch.uint8)
        assert torch.equal(item["lr"], imresize(hr8, 0.5).float() / 255)  # MATLAB bicubic of the HR patch, 8-bit
    batch = next(iter(dm.train_dataloader()))
    assert batch["lr"].shape == (2, 3, 32, 32) and batch["hr"].shape == (2, 3, 64, 64)
    too_big = ImageNetSRDataModule(root=root / "train", scale=4, lr_patch_size=32, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=r"every one of the 5 HR images .* smaller than the HR patch 128x128"):
        too_big.setup("fit")


def test_imagenet_pretraining_runs_end_to_end(
    data_dir: Path, make_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg("train", [*TINY_SAFMN, *STEPS, "pretrain=imagenet", f"paths.data_dir={data_dir}"], tmp_path)
    with caplog.at_level(logging.INFO):
        metrics = train(cfg)
    assert math.isfinite(metrics["val/Set5/psnr"])
    assert "skipped 1 of 3 images smaller than the 64x64 HR patch" in caplog.text
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["data"] == "imagenet" and results["pretrain"] == {
        "strategy": "imagenet",
        "source_scale": None,
        "path": None,
    }


# ------------------------------------------------------------------------------------------------------ Table 1
def test_cross_scale_table_sweep_runs_in_order_and_collects(
    data_dir: Path, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """experiment=hma_table1_cross_scale end to end (a tiny HMA): 12 jobs in one multirun, the from-scratch column
    first, every transfer initialised from the sweep's own x<t> run, then the table."""
    from sresolve.cli.collect import main as collect_main

    run_cli(
        "train",
        "experiment=hma_table1_cross_scale",
        *TINY_HMA,
        *STEPS,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )
    sweep = tmp_path / "train" / "hma_table1_df2k"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == sorted(f"x{s}_from_{t}" for s in (2, 3, 4) for t in ("none", 2, 3, 4))
    for s in (2, 3, 4):
        for t in (2, 3, 4):
            report = json.loads((sweep / f"x{s}_from_{t}" / "pretrain_report.json").read_text())
            assert report["path"] == str(sweep / f"x{t}_from_none" / "weights" / "net_g_latest.pth")
            assert report["new"] == (4 if s == 4 else 2) and report["skipped"] == (4 if t == 4 else 2)
    rows = list(csv.reader((sweep / "table1.csv").open()))
    assert rows[0] == ["target_scale", "none", "x2", "x3", "x4"]
    assert [r[0] for r in rows[1:]] == ["2", "3", "4"]
    for row in rows[1:]:
        assert all(math.isfinite(float(v)) and float(v) > 0 for v in row[1:]), row
    psnr = json.loads((sweep / "x3_from_2" / "results.json").read_text())["metrics"]["val/psnr"]
    assert float(rows[2][2]) == pytest.approx(psnr, abs=1e-5)
    assert "| ×3 |" in (sweep / "table1.md").read_text()
    # the collector CLI gives the same table from the run folders
    assert collect_main([str(sweep), "--out", str(tmp_path / "collected")]) == 0
    assert list(csv.reader((tmp_path / "collected" / "table1.csv").open())) == rows


def test_collector_reads_csv_logs_and_leaves_missing_cells_empty(tmp_path: Path) -> None:
    """Runs without results.json (older runs) are read from csv/metrics.csv; a cell without a run stays empty."""
    from sresolve.results import cross_scale_table, find_runs, write_table

    def run(name: str, scale: int, pretrain: dict, values: list[float]) -> None:
        folder = tmp_path / name
        (folder / "csv").mkdir(parents=True)
        cfg = {"scale": scale, "model": {"arch": "hat"}, "data": {"name": "df2k"}, "pretrain": pretrain}
        (folder / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
        lines = ["epoch,step,train/loss,val/psnr"] + [f"0,{i},0.1,{v}" for i, v in enumerate(values)]
        (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")

    run("a", 2, {"strategy": "none"}, [30.0, 31.5])
    run("b", 4, {"strategy": "cross_scale", "source_scale": 2}, [28.0, 27.5])
    run("c", 4, {"strategy": "cross_scale", "source_scale": "none"}, [27.0])
    table = cross_scale_table(find_runs(tmp_path))
    assert (table.rows, table.columns) == ([2, 4], ["none", "x2"])
    assert (table.value(2, "none"), table.value(4, "x2"), table.value(4, "none")) == (31.5, 27.5, 27.0)
    assert math.isnan(table.value(2, "x2"))
    assert cross_scale_table(find_runs(tmp_path), reduce="best").value(4, "x2") == 28.0
    paths = write_table(table, tmp_path / "out")
    assert list(csv.reader(paths["csv"].open()))[1] == ["2", "31.500000", ""]
    assert "| ×2 | 31.50 | – |" in paths["markdown"].read_text()
