"""Multi-related-task pre-training (``pretrain=multi_task``, HAT Table 7): the shared-body network with one head per
scale, its data, its training module, fine-tuning from it, and the Table 7 sweep through ``sresolve-report``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import tiny_run
from sresolve import archs
from sresolve.archs.layers import MultiScaleHeads, is_multi_scale_state, single_scale_state_dict
from test_pretrain import TINY_HAT

TINY_HAT_KW = {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 8, "squeeze_factor": 6}
STEPS = tiny_run()


def _multi(arch: str = "hat", scales: tuple[int, ...] = (2, 3, 4), **kw: Any) -> MultiScaleHeads:
    torch.manual_seed(0)
    return MultiScaleHeads({s: archs.create(arch, scale=s, **{**TINY_HAT_KW, **kw}) for s in scales})


def test_shared_body_heads_and_single_scale_weights() -> None:
    """One body (the single-scale network's keys under ``body.``, no upsampler), one head per scale; the ×s weights
    extracted from it load strictly into a plain ×s HAT that computes exactly the multi-scale network's ×s output."""
    net = _multi().eval()
    state = net.state_dict()
    plain4 = archs.create("hat", scale=4, **TINY_HAT_KW)
    body_keys = {k for k in plain4.state_dict() if not k.startswith("upsample.")}
    assert {k[5:] for k in state if k.startswith("body.")} == body_keys
    assert {k.split(".")[1] for k in state if k.startswith("heads.")} == {"x2", "x3", "x4"}
    assert is_multi_scale_state(state) and not is_multi_scale_state(plain4.state_dict())
    # x2 head: one conv 4·64 rows; x3: one conv 9·64; x4: two convs 4·64 (spec §4)
    assert state["heads.x3.0.weight"].shape[0] == 9 * 64 and "heads.x4.2.weight" in state
    n_params = sum(p.numel() for p in net.parameters())
    head_params = sum(p.numel() for n, p in net.named_parameters() if n.startswith("heads."))
    assert (
        n_params
        == sum(p.numel() for p in plain4.parameters())
        - sum(p.numel() for n, p in plain4.named_parameters() if n.startswith("upsample."))
        + head_params
    )
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        for s in (2, 3, 4):
            y = net(x, scale=s)
            assert y.shape == (1, 3, 12 * s, 10 * s)
            assert torch.equal(net.at_scale(s)(x), y)
            plain = archs.create("hat", scale=s, **TINY_HAT_KW).eval()
            plain.load_state_dict(single_scale_state_dict(state, s), strict=True)
            assert torch.equal(plain(x), y)
    assert set(single_scale_state_dict(state, None)) == body_keys  # body only
    with pytest.raises(ValueError, match=r"heads for x\[2, 3, 4\], not x8"):
        net(x, scale=8)
    with pytest.raises(TypeError, match=r"separate 'upsample'.*got SAFMN"):
        MultiScaleHeads({s: archs.create("safmn", scale=s, dim=8, n_blocks=1) for s in (2, 4)})
    with pytest.raises(ValueError, match="at least two scales"):
        MultiScaleHeads({4: plain4})


def test_multi_scale_items_and_loaders(samples_root: Path) -> None:
    from sresolve.data import SamplesDataModule
    from sresolve.data.datasets import MultiScalePairedDataset
    from sresolve.data.degradation import imresize

    ds = MultiScalePairedDataset(
        scales=[4, 2, 3], hr_dirs=samples_root / "train" / "HR", lr_patch_size=12, use_hflip=False, use_rot=False
    )
    item = ds[(5, 1234)]
    assert list(item) == ["x2", "x3", "x4"]
    for s in (2, 3, 4):
        lr, hr = item[f"x{s}"]["lr"], item[f"x{s}"]["hr"]
        assert lr.shape == (3, 12, 12) and hr.shape == (3, 12 * s, 12 * s)
        hr8 = torch.round(hr * 255).to(torch.uint8)
        assert torch.equal(lr, imresize(hr8, 1 / s).float() / 255)  # MATLAB bicubic of its own HR patch
    again = ds[(5, 1234)]
    assert all(torch.equal(again[k]["hr"], item[k]["hr"]) for k in item)  # a pure function of (index, seed)
    assert not torch.equal(ds[(5, 99)]["x2"]["hr"], item["x2"]["hr"])
    with pytest.raises(ValueError, match="lr_dirs"):
        MultiScalePairedDataset(scales=[2, 4], hr_dirs=samples_root / "train" / "HR", lr_dirs=samples_root)

    dm = SamplesDataModule(samples_root, scale=4, scales=[2, 3, 4], lr_patch_size=12, batch_size=2, num_workers=0)
    assert dm.val_names == ["samples", "samples_x2", "samples_x3"] and dm.val_scales == [4, 2, 3]
    dm.setup("fit")
    shapes = {n: tuple(ds[0]["hr"].shape[-2:]) for n, ds in dm.val_sets.items()}
    lr_shapes = {n: tuple(ds[0]["lr"].shape[-2:]) for n, ds in dm.val_sets.items()}
    for name, s in zip(dm.val_names, dm.val_scales, strict=True):
        assert shapes[name] == (lr_shapes[name][0] * s, lr_shapes[name][1] * s)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x3"]["hr"].shape == (2, 3, 36, 36) and batch["x4"]["lr"].shape == (2, 3, 12, 12)
    with pytest.raises(ValueError, match=r"data.scale=4 .* must be one of data.scales=\[2, 3\]"):
        SamplesDataModule(samples_root, scale=4, scales=[2, 3])


def test_every_head_learns_at_every_step(samples_root: Path) -> None:
    """The joint loss is the mean of the per-scale losses: one step gives every head and the body a gradient."""
    from sresolve.data import SamplesDataModule
    from sresolve.models import MultiTaskSRModule

    module = MultiTaskSRModule(
        "hat",
        {**TINY_HAT_KW, "scale": 4},
        {"name": "adam", "lr": 1e-4},
        {"name": "multistep", "milestones": [9]},
        {"l1": 1.0},
        scales=[2, 3, 4],
    )
    dm = SamplesDataModule(samples_root, scale=4, scales=[2, 3, 4], lr_patch_size=16, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.log = lambda *a, **k: None  # type: ignore[method-assign]
    loss = module.training_step(batch, 0)
    loss.backward()
    per_scale = []
    for s in (2, 3, 4):
        sr = module.net(batch[f"x{s}"]["lr"], scale=s)
        per_scale.append((sr - batch[f"x{s}"]["hr"]).abs().mean())
    assert loss.item() == pytest.approx(torch.stack(per_scale).mean().item(), rel=1e-5)
    for name, p in module.net.named_parameters():
        if "relative_position_bias_table" in name:
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match=r"scale=8 \(the target scale\) must be one of pretrain.scales"):
        MultiTaskSRModule("hat", {**TINY_HAT_KW, "scale": 8}, {"name": "adam"}, {"name": "cosine"}, {"l1": 1.0})


def test_finetuning_reads_the_target_head_from_a_multi_scale_file(tmp_path: Path) -> None:
    """Every loading strategy reads a multi-scale file as the ×s network: body + the ×s head; a scale without a head
    is an error naming the missing upsampler keys and the heads the file has."""
    from sresolve.pretrain import PretrainMismatchError, transfer_weights

    state = _multi().state_dict()
    net = archs.create("hat", scale=3, **TINY_HAT_KW)
    report = transfer_weights(net, state)
    assert len(report.loaded) == len(net.state_dict()) and not report.new
    assert torch.equal(net.state_dict()["upsample.0.weight"], state["heads.x3.0.weight"])
    body = transfer_weights(archs.create("hat", scale=8, **TINY_HAT_KW), state, exclude=["upsample.*"])
    assert all(k.startswith("upsample.") for k in body.new)  # cross-scale: the body only
    with pytest.raises(
        PretrainMismatchError, match=r"missing from the file: upsample\..*heads for x\[2, 3, 4\], none for x8"
    ):
        transfer_weights(archs.create("hat", scale=8, **TINY_HAT_KW), state)
    # sresolve-test builds the network from the config and loads the file into it: the x3 head
    from sresolve.cli._common import load_weights_into
    from sresolve.config import ConfigError

    torch.save({"params": state}, tmp_path / "multi.pth")
    net3 = archs.create("hat", scale=3, **TINY_HAT_KW).eval()
    load_weights_into(net3, tmp_path / "multi.pth")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net3(x), _multi().eval()(x, scale=3))
    with pytest.raises(ConfigError, match=r"missing \['upsample\."):
        load_weights_into(archs.create("hat", scale=8, **TINY_HAT_KW), tmp_path / "multi.pth")


def test_table7_sweeps_and_report(samples_root: Path, tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    """experiment=hat_table7_pretrain (same-task and multi-task jobs: the multi-task one validates every scale and
    exports the multi-scale and per-scale weights) then experiment=hat_table7_finetune (each fine-tuned at ×4 from
    its stage-1 job, strictly): sresolve-report's table has one row per strategy with that job's metrics."""
    from sresolve.checkpoints import load_model, load_state_dict
    from sresolve.cli.report import main
    from sresolve.results import find_runs

    common = [*TINY_HAT[1:], *STEPS, "data=samples", f"paths.data_dir={samples_root.parent}", "export=true"]
    pre = tmp_path / "pre"
    run_cli(
        "train",
        "experiment=hat_table7_pretrain",
        *common,
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={pre}",
        cwd=tmp_path,
    )
    assert sorted(p.name for p in pre.iterdir() if p.is_dir()) == ["imagenet", "multi_task"]
    multi_run = find_runs(pre / "multi_task")[0]
    assert multi_run.metrics["val/psnr"] == multi_run.metrics["val/samples/psnr"]  # the target scale x4
    assert 10 < multi_run.metrics["val/samples_x2/psnr"] != multi_run.metrics["val/samples/psnr"]
    assert {"val/samples_x3/psnr", "val/samples_x3/ssim"} <= set(multi_run.metrics)
    assert json.loads((pre / "multi_task" / "results.json").read_text())["pretrain"]["strategy"] == "multi_task"
    weights = pre / "multi_task" / "weights"
    multi = load_state_dict(weights / "net_g_latest.pth", key="params_ema")
    assert is_multi_scale_state(multi)
    net = _multi().eval()
    net.load_state_dict(multi)
    x = torch.rand(1, 3, 16, 16)
    for s in (2, 3):  # the per-scale exports are plain networks, detected from their keys
        plain = load_model(weights / f"net_g_latest_x{s}.safetensors").eval()
        assert plain.scale == s
        with torch.no_grad():
            assert torch.equal(plain(x), net(x, scale=s))
    with torch.no_grad():  # the multi-scale file itself, at a chosen head
        assert torch.equal(load_model(weights / "net_g_latest.pth", scale=3)(x), net(x, scale=3))
    with pytest.raises(ValueError, match=r"heads for x\[2, 3, 4\] .*pass scale="):
        load_model(weights / "net_g_latest.pth")
    # sresolve-upscale on the multi-scale file: scale=3 picks the x3 head
    from conftest import compose_cfg
    from sresolve.cli.upscale import run_upscale
    from sresolve.data.io import read_image, write_image

    write_image(tmp_path / "lr.png", x[0])
    up = compose_cfg(
        "infer",
        [
            f"input={tmp_path / 'lr.png'}",
            f"output={tmp_path / 'up'}",
            f"weights={weights / 'net_g_latest.pth'}",
            "scale=3",
            "device=cpu",
        ],
        tmp_path / "up_run",
    )
    (written,) = run_upscale(up)
    lr8 = read_image(tmp_path / "lr.png")[None]
    with torch.no_grad():
        assert torch.allclose(read_image(written)[None], net(lr8, scale=3).clamp(0, 1), atol=1 / 255)
    fine = tmp_path / "fine"
    run_cli(
        "train",
        "experiment=hat_table7_finetune",
        *common,
        f"paths.log_dir={tmp_path}",
        f"pretrain.sources_dir={pre}",
        f"hydra.sweep.dir={fine}",
        cwd=tmp_path,
    )
    for job in ("from_imagenet", "from_multi_task"):
        report = json.loads((fine / job / "pretrain_report.json").read_text())
        assert report["new"] == 0 and report["path"].startswith(str(pre))
        assert report["loaded"] == len(single_scale_state_dict(multi, 4))  # strict: body + the x4 head
    out = tmp_path / "report"
    assert main([str(fine), "--out", str(out)]) == 0
    rows = {r.path.name: r for r in find_runs(fine)}
    text = (out / "report.md").read_text()
    assert "| pre-training | samples PSNR | samples SSIM |" in text
    for strategy in ("imagenet", "multi_task"):
        psnr = rows[f"from_{strategy}"].metrics["val/samples/psnr"]
        assert f"| {strategy} | {psnr:.2f} |" in text
    overrides = yaml.safe_load((fine / "from_multi_task" / ".hydra" / "overrides.yaml").read_text())
    assert "pretrain.source=multi_task" in overrides
    assert main([str(pre), "--out", str(tmp_path / "report_pre")]) == 0
    assert "| pre-training |" in (tmp_path / "report_pre" / "report.md").read_text()
