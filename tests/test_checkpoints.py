"""sresolve.checkpoints: safe loading, container unwrapping, architecture detection and atomic writing."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from sresolve.archs import create, detect_arch
from sresolve.checkpoints import (
    CheckpointError,
    atomic_torch_save,
    export_basicsr,
    load_model,
    load_state_dict,
    save_safetensors,
)

X = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(0))


def _random_model(name: str, scale: int, seed: int, **kw: Any) -> nn.Module:
    model = create(name, scale=scale, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _sd(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_output(a: nn.Module, b: nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(a(X), b(X))


def _write(layout: str, path: Path, sd: dict[str, Tensor], other: dict[str, Tensor]) -> Path:
    """Write ``sd`` (the weights that must be picked) in one of the layouts found in the wild."""
    if layout == "params":
        torch.save({"params": sd}, path)
    elif layout == "params_ema+params":
        torch.save({"params": other, "params_ema": sd}, path)
    elif layout == "bare":
        torch.save(sd, path)
    elif layout == "module":
        torch.save({"params": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif layout == "compiled":
        torch.save({f"module._orig_mod.{k}": v for k, v in sd.items()}, path)
    elif layout == "lightning":
        state = {f"net.{k}": v for k, v in other.items()} | {f"net_ema.{k}": v for k, v in sd.items()}
        state["loss.fft.dummy"] = torch.zeros(1)
        torch.save({"state_dict": state, "epoch": 3, "global_step": 10, "pytorch-lightning_version": "2.6.6"}, path)
    elif layout == "lightning_no_ema":
        torch.save({"state_dict": {f"net.{k}": v for k, v in sd.items()}, "epoch": 1}, path)
    elif layout == "model":
        torch.save({"model": sd, "step": 5}, path)
    elif layout == "safetensors":
        path = path.with_suffix(".safetensors")
        save_safetensors(path, sd, metadata={"arch": "safmn"})
    else:  # pragma: no cover
        raise AssertionError(layout)
    return path


LAYOUTS = [
    "params",
    "params_ema+params",
    "bare",
    "module",
    "compiled",
    "lightning",
    "lightning_no_ema",
    "model",
    "safetensors",
]
VARIANTS = ["safmn", "safmn_c48n12", "safmn_l"]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", VARIANTS)
def test_load_model_infers_variant_and_scale(tmp_path: Path, name: str, scale: int) -> None:
    # spread the layouts over the 9 (variant, scale) cases so every layout meets several variants
    idx = VARIANTS.index(name) * 3 + scale - 2
    layout = LAYOUTS[idx % len(LAYOUTS)]
    src = _random_model(name, scale, seed=idx)
    other = _random_model(name, scale, seed=100 + idx)
    path = _write(layout, tmp_path / f"{name}_x{scale}.pth", _sd(src), _sd(other))

    sd = load_state_dict(path)
    assert detect_arch(sd) == (name, {"scale": scale})
    model = load_model(path)
    assert not model.training
    assert model.scale == scale
    assert (model.dim, model.n_blocks, model.ffn_scale) == (src.dim, src.n_blocks, src.ffn_scale)
    assert _same_output(model, src)
    assert not _same_output(model, other)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_unwraps_to_the_right_weights(tmp_path: Path, layout: str) -> None:
    src = _random_model("safmn", 2, seed=1, n_blocks=1)
    other = _random_model("safmn", 2, seed=2, n_blocks=1)
    path = _write(layout, tmp_path / "w.pth", _sd(src), _sd(other))
    sd = load_state_dict(path)
    assert sorted(sd) == sorted(src.state_dict())  # safetensors stores keys sorted
    assert all(torch.equal(sd[k], v) for k, v in src.state_dict().items())
    # a custom (non-variant) configuration is rebuilt with explicit arguments
    assert detect_arch(sd) == ("safmn", {"scale": 2, "dim": 36, "n_blocks": 1, "ffn_scale": 2.0})
    assert _same_output(load_model(path), src)


def test_explicit_keys(tmp_path: Path) -> None:
    a, b = _random_model("safmn", 4, seed=3, n_blocks=1), _random_model("safmn", 4, seed=4, n_blocks=1)
    p = tmp_path / "ema.pth"
    torch.save({"params": _sd(a), "params_ema": _sd(b)}, p)
    assert _same_output(load_model(p), b)  # params_ema preferred
    assert _same_output(load_model(p, key="params"), a)
    lp = tmp_path / "lightning.ckpt"
    torch.save(
        {
            "state_dict": {
                **{f"net.{k}": v for k, v in _sd(a).items()},
                **{f"net_ema.{k}": v for k, v in _sd(b).items()},
            }
        },
        lp,
    )
    assert _same_output(load_model(lp), b)
    assert _same_output(load_model(lp, key="net"), a)
    assert _same_output(load_model(lp, key="net_ema"), b)
    with pytest.raises(
        KeyError, match=r"'params_g' not found in .*ema\.pth.*available keys: \['params', 'params_ema'\]"
    ):
        load_state_dict(p, key="params_g")
    with pytest.raises(
        KeyError,
        match=r"lightning\.ckpt; available keys: \['state_dict'\]; prefixes inside 'state_dict': \['net', 'net_ema'\]",
    ):
        load_state_dict(lp, key="model")


def test_non_default_config_and_in_memory_dict() -> None:
    src = _random_model("safmn", 3, seed=5, dim=24, n_blocks=3, ffn_scale=1.5)
    sd = _sd(src)
    assert detect_arch(sd) == ("safmn", {"scale": 3, "dim": 24, "n_blocks": 3, "ffn_scale": 1.5})
    model = load_model({"params": sd})
    assert model.feats[0].ccm.ccm[0].weight.shape[0] == 36
    assert _same_output(model, src)


def test_half_precision_weights_load_into_fp32(tmp_path: Path) -> None:
    src = _random_model("safmn", 2, seed=6, n_blocks=1)
    p = tmp_path / "half.pth"
    torch.save({"params": {k: v.half() for k, v in src.state_dict().items()}}, p)
    model = load_model(p)
    assert next(model.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert (model(X) - src(X)).abs().max() < 1e-2


# ------------------------------------------------------------------------------------------------ refusing bad files
class _MyDict(collections.OrderedDict):
    """An arbitrary class: unpickling it would execute code from this module."""


@pytest.mark.parametrize(
    "payload",
    [
        lambda sd: {"params": _MyDict(sd)},
        lambda sd: {"params": sd, "opt": Path("/etc/passwd")},
    ],
    ids=["dict-subclass", "path"],
)
def test_pickled_objects_are_refused(tmp_path: Path, payload: Any) -> None:
    src = _random_model("safmn", 2, seed=7, n_blocks=1)
    p = tmp_path / "evil.pth"
    torch.save(payload(_sd(src)), p)
    with pytest.raises(CheckpointError, match=r"evil\.pth is not a plain weights file.*(_MyDict|PosixPath)"):
        load_state_dict(p)
    with pytest.raises(ValueError, match="not a plain weights file"):
        load_model(p)


def test_reduce_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.mkdir, (str(marker),))

    p = tmp_path / "rce.pth"
    with open(p, "wb") as f:
        pickle.dump({"params": {"w": Evil()}}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"rce\.pth"):
        load_state_dict(p)
    assert not marker.exists()


def test_missing_file_corrupt_file_and_unrecognised(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "SAFMN_DF2K_x4.pth"
    with pytest.raises(FileNotFoundError, match=r"SAFMN_DF2K_x4\.pth"):
        load_model(missing)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load_state_dict(tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match=r"cannot read .*junk\.pth"):
        load_state_dict(junk)
    bad_st = tmp_path / "junk.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        load_state_dict(bad_st)
    unknown = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, unknown)
    with pytest.raises(
        ValueError, match=r"resnet\.pth.*families tried: \[.*'safmn'.*\].*first keys: \['conv1\.weight', 'fc\.weight'\]"
    ):
        load_model(unknown)
    notsd = tmp_path / "notsd.pth"
    torch.save({"params": {"w": 1, "b": "x"}}, notsd)
    with pytest.raises(CheckpointError, match=r"notsd\.pth.*not a state dict.*\['w', 'b'\]"):
        load_state_dict(notsd)
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(CheckpointError, match=r"list\.pth holds a list"):
        load_state_dict(lst)


def test_inconsistent_safmn_dict_is_a_clear_error() -> None:
    sd = _sd(_random_model("safmn", 2, seed=8, n_blocks=2))
    broken = dict(sd)
    broken["to_img.0.weight"] = torch.zeros(13, 36, 3, 3)
    with pytest.raises(ValueError, match=r"to_img\.0\.weight has 13 rows"):
        load_model(broken)
    missing = {k: v for k, v in sd.items() if k != "feats.1.norm1.bias"}
    with pytest.raises(ValueError, match=r"(?s)do not fit the inferred network safmn.*feats\.1\.norm1\.bias"):
        load_model(missing)
    model = load_model(missing, strict=False)  # explicitly lenient
    assert torch.equal(model.feats[1].norm1.bias, torch.zeros(36))


# ------------------------------------------------------------------------------------------------ writing
def test_export_basicsr_round_trip(tmp_path: Path) -> None:
    raw = _random_model("safmn", 4, seed=9, n_blocks=2)
    ema = _random_model("safmn", 4, seed=10, n_blocks=2)
    wrapped = {f"module.{k}": v for k, v in ema.state_dict().items()}
    out = export_basicsr(tmp_path / "sub" / "SAFMN_x4.pth", raw, wrapped)
    assert out == tmp_path / "sub" / "SAFMN_x4.pth"
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert set(obj) == {"params", "params_ema"}
    assert list(obj["params_ema"]) == list(ema.state_dict())
    for k, v in obj["params"].items():
        assert v.is_contiguous() and v.device.type == "cpu" and not v.requires_grad
        assert torch.equal(v, raw.state_dict()[k])
    assert _same_output(load_model(out), ema)
    assert _same_output(load_model(out, key="params"), raw)
    only = export_basicsr(tmp_path / "raw.pth", raw.state_dict())
    assert set(torch.load(only, weights_only=True)) == {"params"}
    assert sorted(os.listdir(tmp_path / "sub")) == ["SAFMN_x4.pth"]


def test_export_writes_compact_tensors(tmp_path: Path) -> None:
    big = torch.randn(1000, 1000)
    view = big[:2, :3].t()  # non-contiguous view of a 4 MB storage
    p = export_basicsr(tmp_path / "v.pth", {"w": view})
    assert p.stat().st_size < 10_000
    assert torch.equal(torch.load(p, weights_only=True)["params"]["w"], view)
    with pytest.raises(TypeError, match=r"params\['n'\] is a int"):
        export_basicsr(tmp_path / "bad.pth", {"n": 3})  # type: ignore[dict-item]


def test_save_safetensors_round_trip(tmp_path: Path) -> None:
    src = _random_model("safmn_c48n12", 3, seed=11)
    sd = src.state_dict()
    sd_shared = dict(sd) | {"alias": sd["to_feat.bias"]}  # shared storage is fine: tensors are copied
    p = save_safetensors(tmp_path / "m.safetensors", sd_shared, metadata={"scale": "3"})
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        assert f.metadata() == {"scale": "3"}
    loaded = load_state_dict(p)
    assert torch.equal(loaded.pop("alias"), sd["to_feat.bias"])
    assert detect_arch(loaded) == ("safmn_c48n12", {"scale": 3})
    assert _same_output(load_model(loaded), src)
    with pytest.raises(TypeError, match="metadata must map str to str"):
        save_safetensors(tmp_path / "x.safetensors", sd, metadata={"scale": 3})  # type: ignore[dict-item]
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


class _Unpicklable:
    def __reduce__(self) -> tuple:
        raise RuntimeError("boom while pickling")


def test_atomic_save_failure_keeps_target_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pth"
    atomic_torch_save({"params": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()
    big = torch.randn(256, 256)  # written before the failing object: the temp file really is partial
    with pytest.raises(RuntimeError, match="boom while pickling"):
        atomic_torch_save({"params": {"w": big}, "bad": _Unpicklable()}, target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pth"]
    assert torch.equal(load_state_dict(target)["w"], torch.ones(3))
    # a fresh target in a new directory is created; failure there leaves nothing at all
    with pytest.raises(RuntimeError):
        atomic_torch_save(_Unpicklable(), tmp_path / "new" / "x.pth")
    assert os.listdir(tmp_path / "new") == []
