"""The optional loggers, DDP simulated on CPU, other data layouts (pre-training strategies: test_pretrain.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from sresolve.cli.train import train
from sresolve.config import ConfigError

TINY = [
    "trainer=cpu",
    "model.dim=16",
    "model.n_blocks=1",
    "model.batch_size=4",
    "model.lr_patch_size=16",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def test_tensorboard_logger_writes_offline(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """``logger=tensorboard`` writes its event files (``logger=wandb``: tests/test_wandb.py)."""
    cfg = make_cfg("train", [*TINY, "logger=tensorboard", "model.total_iter=2", "val_freq=2", "save_freq=2"], tmp_path)
    metrics = train(cfg)
    assert metrics["val/psnr"] > 0
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents*"))


class DumpRankWeights(L.Callback):
    """Writes every rank's raw and EMA weights to ``<out>/rank<r>.pt`` when training ends."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(
            {
                "rank": trainer.global_rank,
                "world": trainer.world_size,
                "batch": trainer.datamodule.per_device_batch_size,
                "state": state,
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def test_ddp_cpu_two_processes_same_weights_and_exact_validation(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """2 CPU processes (gloo, spawn), a few real steps: global batch split per rank, both ranks end with identical
    raw and EMA weights, and the validation (sharded without padding, reduced as sum and count) equals a
    single-process evaluation of the same EMA weights."""
    from sresolve.checkpoints import load_model
    from sresolve.data.datasets import BenchmarkDataset
    from sresolve.metrics import psnr_y

    dump = [f"+callbacks.dump._target_={__name__}.DumpRankWeights", f"+callbacks.dump.out={tmp_path / 'ranks'}"]
    cfg = make_cfg(
        "train", [*TINY, "trainer=ddp_cpu", "model.total_iter=3", "val_freq=3", "save_freq=3", *dump], tmp_path
    )
    train(cfg)
    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(d["rank"], d["world"], d["batch"]) for d in ranks] == [(0, 2, 2), (1, 2, 2)]  # global batch 4
    assert set(ranks[0]["state"]) == set(ranks[1]["state"]) and any(k.startswith("net_ema.") for k in ranks[0]["state"])
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    trained = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert trained["global_step"] == 3  # the checkpoint (written by rank 0) holds those weights
    assert all(torch.equal(v, ranks[0]["state"][k]) for k, v in trained["state_dict"].items())
    import csv

    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = [float(r["val/samples/psnr"]) for r in rows if r.get("val/samples/psnr")]
    assert len(logged) == 1
    net = load_model(tmp_path / "weights" / "net_g_latest.pth")
    ds = BenchmarkDataset(hr_dir=Path(cfg.data.root) / "val" / "HR", scale=4)
    with torch.no_grad():
        ref = [float(psnr_y(net(s["lr"][None]).clamp(0, 1), s["hr"][None], 4)[0]) for s in ds]
    assert len(ref) == 3  # an odd count: padding to 2 x 2 would have scored one image twice
    assert logged[0] == pytest.approx(sum(ref) / len(ref), abs=1e-4)


def test_ddp_batch_not_divisible_fails_before_spawning(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = make_cfg("train", [*TINY, "trainer=ddp_cpu", "model.batch_size=5"], tmp_path)
    with pytest.raises(ConfigError, match=r"data\.batch_size=5"):
        train(cfg)


def test_quickstart_notebook_executes() -> None:
    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "shave 4" in outputs and "(1, 3, 256, 256)" in outputs


def _fake_tree(root: Path, folders: dict[str, int], size: tuple[int, int] = (96, 120)) -> None:
    """Write ``count`` real-photo crops into each folder (DF2K / benchmark layouts) from the bundled samples."""
    from sresolve.data.io import write_image
    from sresolve.data.samples import load_sample

    photo = torch.from_numpy(load_sample("rocket")).permute(2, 0, 1).float() / 255
    for folder, count in folders.items():
        for i in range(count):
            crop = photo[:, 20 * i : 20 * i + size[0], 30 * i : 30 * i + size[1]]
            write_image(root / folder / f"{i:04d}.png", crop)


def test_df2k_layout_trains(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    data = tmp_path / "datasets"
    _fake_tree(data, {"DF2K/DIV2K_train_HR": 2, "DF2K/Flickr2K_HR": 2, "benchmark/Set5/HR": 2})
    cfg = make_cfg(
        "train",
        [
            *TINY,
            "data=df2k",
            f"paths.data_dir={data}",
            "data.num_workers=0",
            "model.total_iter=2",
            "val_freq=2",
            "save_freq=2",
        ],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert set(metrics) == {"val/psnr", "val/Set5/psnr", "val/Set5/ssim"}
    missing = make_cfg("train", [*TINY, "data=df2k", f"paths.data_dir={tmp_path / 'nowhere'}"], tmp_path / "run2")
    with pytest.raises(ConfigError, match=r"nowhere/DF2K/DIV2K_train_HR"):
        train(missing)


def test_benchmark_table_over_several_sets(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    from sresolve import archs
    from sresolve.checkpoints import export_basicsr
    from sresolve.cli.test import run_test

    data = tmp_path / "datasets"
    _fake_tree(data, {"benchmark/Set5/HR": 2, "benchmark/Set14/HR": 3}, size=(50, 62))  # not multiples of 4
    net = archs.create("safmn", scale=4, dim=16, n_blocks=1)
    export_basicsr(tmp_path / "w.pth", net.state_dict())
    cfg = make_cfg(
        "test",
        ["model.dim=16", "model.n_blocks=1", f"paths.data_dir={data}", f"ckpt={tmp_path / 'w.pth'}", "device=cpu"],
        tmp_path / "out",
    )
    out = run_test(cfg)
    rows = [(r.dataset, r.method, len(r.psnr)) for r in out["results"]]
    assert rows == [("Set5", "bicubic", 2), ("Set5", "safmn", 2), ("Set14", "bicubic", 3), ("Set14", "safmn", 3)]
    assert "GT modcrop 4" in out["table"] and (tmp_path / "out" / "results.csv").is_file()


def test_lightning_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    """A save that dies half-way (here: an unpicklable object) leaves the previous last.ckpt intact, no temp files."""
    from sresolve.models.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 5}, target)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": lambda: None}, target)
    kept = torch.load(target, weights_only=True)
    assert kept["global_step"] == 5 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
