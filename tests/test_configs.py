"""Every config composes, and the paper recipes resolve to the official numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from sresolve import archs
from sresolve.config import conf_dir, split_model_cfg

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(make_cfg: Callable[..., DictConfig], tmp_path: Path, experiment: str) -> None:
    cfg = make_cfg("train", [f"experiment={experiment}"], tmp_path)
    resolved = OmegaConf.to_container(cfg.model, resolve=True)
    arch, kwargs, recipe = split_model_cfg(resolved)
    assert arch in archs.list_archs() and set(kwargs) <= set(archs.get_arch(arch).parameter_names)
    assert recipe["total_iter"] > 0 and recipe["optim"]["lr"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_names_constructor_arguments(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, model: str
) -> None:
    cfg = make_cfg("train", [f"model={model}"], tmp_path)
    arch, kwargs, _ = split_model_cfg(cfg.model)
    defaults = archs.arch_defaults(arch)
    assert set(kwargs) <= set(archs.get_arch(arch).parameter_names)
    for key, value in kwargs.items():  # config defaults are the registered (paper) defaults
        if key != "scale" and key in defaults:
            assert value == (list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]), key


def test_hat_recipes_resolve_to_the_official_schedules(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    x2 = make_cfg("train", ["experiment=hat_x2_df2k"], tmp_path / "a")
    assert (x2.scale, x2.model.optim.lr, x2.model.total_iter, x2.data.batch_size, x2.data.lr_patch_size) == (
        2,
        2e-4,
        500000,
        32,
        64,
    )
    assert list(x2.model.sched.milestones) == [250000, 400000, 450000, 475000]
    x4 = make_cfg("train", ["experiment=hat_x4_df2k_from_x2"], tmp_path / "b")
    assert (x4.scale, x4.model.optim.lr, x4.model.total_iter, x4.pretrain.strategy) == (4, 1e-4, 250000, "cross_scale")
    assert list(x4.model.sched.milestones) == [125000, 200000, 225000, 240000]
    # as the official non-strict load: every same-shape tensor (upsample.0 too); the second x2 stage is new
    assert x4.pretrain.strict and list(x4.pretrain.exclude) == ["upsample.2.*"]
    assert x4.pretrain.path.endswith("train/hat_x2_df2k/weights/net_g_latest.pth")
    pre = make_cfg("train", ["experiment=hat_l_imagenet"], tmp_path / "c")
    assert (pre.model.total_iter, pre.data.name, list(pre.model.sched.milestones)) == (
        800000,
        "imagenet",
        [300000, 500000, 650000, 700000, 750000],
    )
    ft = make_cfg("train", ["experiment=hat_l_df2k_finetune"], tmp_path / "d")
    assert (ft.model.optim.lr, ft.model.total_iter, ft.pretrain.strict, ft.pretrain.key, ft.data.name) == (
        1e-5,
        250000,
        True,
        "params_ema",
        "df2k",
    )
    assert ft.pretrain.path.endswith("train/hat_l_x4_imagenet/weights/net_g_latest.pth")


def test_safmn_recipes(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = make_cfg("train", ["experiment=safmn_x4_df2k"], tmp_path / "a")
    assert (cfg.model.optim.lr, cfg.model.sched.eta_min, cfg.data.batch_size, cfg.model.loss.fft) == (
        1e-3,
        1e-5,
        64,
        0.05,
    )
    large = make_cfg("train", ["experiment=safmn_l_x4_df2k"], tmp_path / "b")
    assert (large.model.optim.lr, large.model.sched.eta_min, large.data.batch_size, large.data.lr_patch_size) == (
        3e-4,
        1e-6,
        48,
        48,
    )
