"""Shared fixtures: Hydra composition of the real config tree with outputs under a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sresolve.config import conf_dir

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_run(iters: int = 2, batch_size: int = 2, lr_patch_size: int = 16) -> list[str]:
    """Overrides of a tiny CPU training run: ``iters`` steps of ``batch_size`` LR patches of ``lr_patch_size`` px,
    one validation and one checkpoint at the end, no progress bar, no model summary, no loader workers."""
    return [
        f"model.batch_size={batch_size}",
        f"model.lr_patch_size={lr_patch_size}",
        f"model.total_iter={iters}",
        f"val_freq={iters}",
        f"save_freq={iters}",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.num_workers=0",
    ]


#: A tiny SAFMN (dim 8, one block).
TINY_SAFMN = ["model=safmn", "model.dim=8", "model.n_blocks=1"]
TINY_WINDOW = ["model.depths=[1]", "model.num_heads=[2]", "model.window_size=8", "model.drop_path_rate=0.0"]
#: Tiny networks of every family (overrides of ``sresolve-train``) for runs of a few CPU steps; AMRSR and EQSR pull
#: their sample experiments (AMRSR needs :func:`multiref_data_dir` as ``paths.data_dir``).
FAMILIES: dict[str, list[str]] = {
    "safmn": TINY_SAFMN,
    "hat": ["model=hat", "model.embed_dim=12", "model.squeeze_factor=6", *TINY_WINDOW],
    "hma": ["model=hma", "model.embed_dim=32", *TINY_WINDOW],
    "eqsr": [
        "experiment=eqsr_samples",
        "model.embed_dim=16",
        "model.decoder_dim=16",
        *TINY_WINDOW,
        "model.depths=[1,1]",
        "model.num_heads=[2,2]",
        "data.query_size=24",
        "data.val_scales=[2.5]",
    ],
    "amrsr": [
        "experiment=amrsr_samples",
        "model.n_feats=8",
        "model.n_feat_blocks=1",
        "model.n_blocks=[1,1,1]",
        "model.vgg_weights=random",
        "model.gan.warmup_iter=1",
        "data.n_refs=1",
    ],
}


@pytest.fixture(scope="session")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded sample images, written once per test session."""
    from sresolve.data.samples import materialize_samples

    root = tmp_path_factory.mktemp("datasets") / "samples"
    materialize_samples(root)
    return root


@pytest.fixture(scope="session")
def multiref_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding the embedded multi-reference set with small (48×96) validation crops, written once per
    session into its own folder (other tests write other crop sizes into theirs)."""
    from sresolve.data.multiref import materialize_multiref_samples

    root = tmp_path_factory.mktemp("multiref") / "samples"
    materialize_multiref_samples(root, val_size=(48, 96))
    return root.parent


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path, data_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` like the CLI does, with ``paths.output_dir`` set to ``output_dir``."""
    GlobalHydra.instance().clear()
    extra = [f"paths.data_dir={data_dir}"] if data_dir is not None else []
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[*extra, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


@pytest.fixture
def make_cfg(samples_root: Path) -> Callable[..., DictConfig]:
    def _make(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
        return compose_cfg(config_name, overrides, output_dir, data_dir=samples_root.parent)

    return _make


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli("train", *overrides, cwd=dir)``: run ``python -m sresolve.cli.<name>`` in a fresh process (Hydra
    multiruns need one), assert it succeeded (showing the end of its stderr otherwise) and return the result."""

    def _run(name: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", f"sresolve.cli.{name}", *args]
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    return _run


@pytest.fixture(scope="session")
def demo_outputs(tmp_path_factory: pytest.TempPathFactory, samples_root: Path) -> Path:
    """An ``outputs/`` folder shaped like the one ``make demo`` leaves (``train/demo_safmn_x4/`` with config,
    metrics, checkpoints and weights; ``test/demo_safmn_x4/`` with results tables, SR images and comparisons), made
    in-process with the real training and test code on a smaller SAFMN (dim 24, 2 blocks, 40 steps). Notebooks read
    it through ``SRESOLVE_OUTPUTS``."""
    from sresolve.cli.test import run_test
    from sresolve.cli.train import train

    root = tmp_path_factory.mktemp("demo") / "outputs"
    small = ["model.dim=24", "model.n_blocks=2"]
    train_dir = root / "train" / "demo_safmn_x4"
    cfg = compose_cfg(
        "train",
        [
            "experiment=demo",
            *small,
            "model.total_iter=40",
            "val_freq=20",
            "save_freq=20",
            "data.num_workers=0",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.log_every_n_steps=5",
        ],
        train_dir,
        data_dir=samples_root.parent,
    )
    train(cfg)
    test_cfg = compose_cfg(
        "test",
        [
            "model=safmn",
            *small,
            "scale=4",
            "data=samples_holdout",
            f"ckpt={train_dir / 'weights' / 'net_g_latest.pth'}",
            "save_comparisons=true",
            "save_images=true",
            "run_name=demo_safmn_x4",
        ],
        root / "test" / "demo_safmn_x4",
        data_dir=samples_root.parent,
    )
    run_test(test_cfg)
    return root
