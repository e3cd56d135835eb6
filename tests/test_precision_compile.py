"""Precision and compilation of training runs (issue 8): bf16-mixed for every family, fp16 refused where it overflows,
``model.compile`` (inner network only, eager validation at any image size) and ``model.channels_last``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from conftest import FAMILIES, TINY_SAFMN, compose_cfg, tiny_run
from sresolve.checkpoints import load_model
from sresolve.cli.train import train

#: The :class:`Record` callbacks of the runs of this process, in creation order.
RECORDS: list[Record] = []


class Record(L.Callback):
    """Notes, at every training batch, the batch's and the first conv weight's memory format, and the number of
    graphs dynamo has compiled at the start and end of each validation (added with ``+callbacks.record``)."""

    def __init__(self) -> None:
        RECORDS.append(self)
        self.channels_last: list[tuple[bool, bool]] = []
        self.graphs: list[tuple[int, int]] = []
        self._start = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        conv = next(m for m in pl_module.net.modules() if isinstance(m, torch.nn.Conv2d))
        fmt = torch.channels_last
        self.channels_last.append(
            (batch["lr"].is_contiguous(memory_format=fmt), conv.weight.is_contiguous(memory_format=fmt))
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._start = _graphs()

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.graphs.append((self._start, _graphs()))


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


# ------------------------------------------------------------------------------------------------ compile / NHWC
def test_compile_and_channels_last_train_the_same_weights_with_plain_keys(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Three steps of eager fp32, of ``compile`` (aot_eager: the real dynamo + AOTAutograd capture without a C++
    toolchain) and of ``channels_last`` end at the same weights; checkpoints and exported weights carry the plain keys;
    validation over images of several sizes compiles nothing; channels_last batches and weights are NHWC."""
    base = [*TINY_SAFMN, *tiny_run(iters=3, batch_size=2, lr_patch_size=16), "logger=none", "model.ema_decay=0.9"]
    runs = {
        "eager": [],
        "compiled": ["model.compile=true", "model.compile_backend=aot_eager"],
        "nhwc": ["model.channels_last=true"],
    }
    records: dict[str, Record] = {}
    for name, extra in runs.items():
        train(make_cfg("train", [*base, *extra, f"+callbacks.record._target_={__name__}.Record"], tmp_path / name))
        records[name] = RECORDS[-1]
    eager = _state(tmp_path / "eager")
    for name in ("compiled", "nhwc"):
        state = _state(tmp_path / name)
        assert list(state) == list(eager)  # same keys, same order: no ``_orig_mod.``
        for key, value in eager.items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
        exported = load_model(tmp_path / name / "weights" / "net_g_latest.safetensors")
        for key, value in exported.state_dict().items():
            torch.testing.assert_close(value, eager[f"net_ema.{key}"], rtol=1e-5, atol=1e-6, msg=key)
    # compiled: graphs exist before the validation, and validating 3 images of different sizes added none
    (before, after), *_ = records["compiled"].graphs
    assert before >= 1 and after == before
    # NHWC only where asked
    assert records["nhwc"].channels_last == [(True, True)] * 3
    assert records["eager"].channels_last == [(False, False)] * 3


# ------------------------------------------------------------------------------------------------ bf16 / fp16
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_mixed_trains_every_family(family: str, samples_root: Path, tmp_path: Path, request: Any) -> None:
    """Two steps in ``bf16-mixed`` (autocast on the CPU) and in fp32 from the same seed: the weights stay float32,
    the loss stays finite (no skipped step) and the validation PSNR, computed in float32 outside autocast, is within
    0.5 dB of the fp32 run's."""
    data_dir = request.getfixturevalue("multiref_data_dir") if family == "amrsr" else samples_root.parent
    psnr = {}
    for precision in ("32-true", "bf16-mixed"):
        out = tmp_path / precision
        overrides = [*FAMILIES[family], *tiny_run(iters=2), "logger=none", f"trainer.precision={precision}"]
        cfg = compose_cfg("train", overrides, out, data_dir=data_dir)
        psnr[precision] = train(cfg)["val/psnr"]
        ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 2 and ckpt["nonfinite_steps"] == 0
        floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float32 for v in floats)
    assert torch.isfinite(torch.tensor(psnr["bf16-mixed"]))
    assert abs(psnr["bf16-mixed"] - psnr["32-true"]) < 0.5, psnr


@pytest.mark.parametrize("family", ["safmn", "hat", "amrsr"])
def test_fp16_is_refused_with_a_message_naming_bf16(
    family: str, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """``16-true`` (on a GPU ``16-mixed`` too; on the CPU Lightning maps that one to bf16 itself) stops before the
    first step with a message saying why and to use ``bf16-mixed``."""
    cfg = make_cfg(
        "train", [*FAMILIES[family], *tiny_run(iters=2), "logger=none", "trainer.precision=16-true"], tmp_path
    )
    reason = {"safmn": "SAFMN is not fp16-safe", "hat": "fp16 overflows in window attention", "amrsr": "Gram"}[family]
    with pytest.raises(ValueError, match=rf"trainer.precision=16-true: .*{reason}.*use trainer.precision=bf16-mixed"):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("family", ["hat", "hma", "eqsr"])
def test_compiled_training_forward_is_one_graph_compiled_once(family: str) -> None:
    """Three compiled training steps (aot_eager) of the window transformers: one graph, no graph break, no recompile
    (the shift-mask cache and EQSR's scale check stay out of the traced code)."""
    from torch._dynamo.utils import counters

    from sresolve import archs

    kw: dict[str, Any] = {"embed_dim": 32, "depths": [1], "num_heads": [2], "window_size": 8}
    if family == "eqsr":
        kw.update(decoder_dim=16, depths=[1, 1], num_heads=[2, 2])
    net = archs.create(family, scale=2, **kw)
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(net, backend="aot_eager")
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        x = torch.rand(2, 3, 32, 32, generator=g)
        if family == "eqsr":  # per-sample scales and query windows, as the arbitrary-scale training batches
            coord = torch.rand(2, 24, 24, 2, generator=g) * 2 - 1
            y = step(x, scale=torch.tensor([2.0, 3.0]) + 0.1 * i, coord=coord, cell=torch.tensor([2 / 64, 2 / 96]))
        else:
            y = step(x)
        y.mean().backward()
    assert counters["stats"]["unique_graphs"] == 1
    assert sum(counters["graph_break"].values()) == 0
    assert not counters["recompiles"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.compile_backend=inductr", r"model.compile_backend must be one of \[.*'inductor'.*\], got 'inductr'"),
        ("model.compile=maybe", "model.compile must be true or false, got 'maybe'"),
        ("model.channels_last=1", "model.channels_last must be true or false, got 1"),
    ],
)
def test_bad_compile_and_memory_format_keys_are_named(
    override: str, message: str, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from sresolve.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        train(make_cfg("train", [*TINY_SAFMN, *tiny_run(iters=2), "logger=none", override], tmp_path))
