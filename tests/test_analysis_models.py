"""Model specs of the analysis tools: config names with overrides, labels, weights files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sresolve.analysis.models import build_model, parse_spec
from sresolve.archs import create
from sresolve.config import ConfigError


def test_config_spec_with_label_and_bracketed_lists() -> None:
    spec = parse_spec(
        "tiny=hat,depths=[1,1],num_heads=[2,2],embed_dim=12,squeeze_factor=6,window_size=8,use_ocab=false"
    )
    assert spec.label == "tiny" and spec.config == "hat" and spec.path is None
    assert dict(spec.overrides) == {
        "depths": [1, 1],
        "num_heads": [2, 2],
        "embed_dim": 12,
        "squeeze_factor": 6,
        "window_size": 8,
        "use_ocab": False,
    }
    label, net = build_model(spec, scale=3)
    assert label == "tiny" and net.scale == 3 and net.depths == [1, 1] and not net.use_ocab and not net.training
    # no label: the spec text names the model
    assert parse_spec("safmn,dim=8").label == "safmn,dim=8"
    # the SwinIR-like baseline of the HAT ablations: 12.06 M parameters at x4 (paper 12.1 M)
    _, base = build_model("SwinIR-like=hat,alpha=0,use_cab=false,use_ocab=false", scale=4)
    assert sum(p.numel() for p in base.parameters()) == 12_059_175


def test_weights_file_spec_keeps_its_scale(tmp_path: Path) -> None:
    net = create("safmn", scale=2, dim=8, n_blocks=1)
    path = tmp_path / "tiny_x2.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    label, loaded = build_model(f"mine={path}", scale=4)
    assert label == "mine" and loaded.scale == 2
    assert build_model(str(path))[0] == "tiny_x2"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("nosuchmodel", "no model config 'nosuchmodel'"),
        ("hat,nokey=1", "hat.yaml has no key 'nokey'"),
        ("hat,alpha", "override 'alpha' is not key=value"),
        ("missing.pth", "weights file missing.pth does not exist"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(spec)
    assert needle in str(err.value)
