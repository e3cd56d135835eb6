"""Frozen VGG-19 feature extractor (torchvision layout), shared by reference matching, the perceptual and texture
losses of AMRSR (spec archs_eqsr_amrsr.md B2, B8) and any other ImageNet-feature metric.

Weights are never downloaded. They come from, in this order:

1. an explicit file (``weights=<path>``: torchvision's ``vgg19-dcbb9e9d.pth`` or any ``.pth``/``.safetensors`` with
   ``features.<i>.weight`` keys, read with ``weights_only=True``);
2. ``weights="random"``: torchvision's random initialisation under a fixed seed (tests, plumbing checks);
3. ``weights=None``: torchvision's ImageNet file in the local torch hub cache
   (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``, where ``torchvision.models.vgg19(weights="DEFAULT")`` would
   have put it). When absent, :func:`resolve_vgg_weights` raises :class:`VGGWeightsMissing` naming the file and where
   to put it.

Inputs are RGB in [0, 1]; they are normalised by the ImageNet mean and std (choice C11: the torchvision convention of
TTSR and srntt-pytorch, not SRNTT's caffe [0, 255]).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG19_FILE",
    "VGG19_LAYERS",
    "VGG19Features",
    "VGGWeightsMissing",
    "default_vgg19_path",
    "resolve_vgg_weights",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's ImageNet VGG-19 weights file (``VGG19_Weights.IMAGENET1K_V1``).
VGG19_FILE = "vgg19-dcbb9e9d.pth"
#: index of each ReLU output in ``torchvision.models.vgg19().features``.
VGG19_LAYERS: dict[str, int] = {
    "relu1_1": 1,
    "relu1_2": 3,
    "relu2_1": 6,
    "relu2_2": 8,
    "relu3_1": 11,
    "relu3_2": 13,
    "relu3_3": 15,
    "relu3_4": 17,
    "relu4_1": 20,
    "relu4_2": 22,
    "relu4_3": 24,
    "relu4_4": 26,
    "relu5_1": 29,
    "relu5_2": 31,
    "relu5_3": 33,
    "relu5_4": 35,
}


class VGGWeightsMissing(FileNotFoundError):
    """No VGG-19 weights file: the message says which file is needed and where to put it."""


def default_vgg19_path() -> Path:
    """Where torchvision caches its ImageNet VGG-19 file: ``<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def resolve_vgg_weights(weights: str | Path | None, purpose: str = "VGG-19 features") -> str | Path:
    """``weights`` → an existing file path or ``"random"``; ``None`` looks in the torch hub cache.

    Raises :class:`VGGWeightsMissing` (a ``FileNotFoundError``) naming the needed file, its expected place and the
    config key, so that a run stops at start instead of training against random features.
    """
    if weights is not None and str(weights) == "random":
        return "random"
    if weights is not None:
        path = Path(str(weights)).expanduser()
        if not path.is_file():
            raise VGGWeightsMissing(f"{purpose}: vgg_weights={str(weights)!r} is not a file")
        return path
    path = default_vgg19_path()
    if path.is_file():
        return path
    raise VGGWeightsMissing(
        f"{purpose} need torchvision's ImageNet VGG-19 weights, which are not downloaded at run time: copy "
        f"{VGG19_FILE} (https://download.pytorch.org/models/{VGG19_FILE}) to {path} (or set TORCH_HOME), or pass "
        "vgg_weights=<path to the file>; vgg_weights=random uses untrained features (tests only)"
    )


def _vgg19_trunk(depth: int) -> nn.Sequential:
    """``torchvision.models.vgg19().features[:depth]`` built here (same indices, so the file's keys map 1:1)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(v)
    return nn.Sequential(*layers[:depth])


def _init_random(trunk: nn.Module, seed: int) -> None:
    """torchvision's VGG init (Kaiming-normal fan-out, zero bias) under a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
                m.bias.zero_()


def _read_features(path: Path, depth: int) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict of VGG-19 weights, got {type(sd).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if not any(k.startswith("features.") for k in sd):  # a bare ``features`` Sequential
        sd = {f"features.{k}": v for k, v in sd.items()}
    out = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    return {k: v for k, v in out.items() if int(k.split(".")[0]) < depth}


class VGG19Features(nn.Module):
    """Frozen VGG-19 returning the requested ReLU outputs as a dict, e.g. ``{"relu3_1": B×256×H/4×W/4}``.

    Args:
        layers: names in :data:`VGG19_LAYERS` (the trunk stops at the deepest one).
        weights: a file, ``"random"`` or ``None`` (torch hub cache), see :func:`resolve_vgg_weights`.
        normalize: subtract the ImageNet mean / divide by the std (inputs in [0, 1]).
        seed: seed of the random initialisation (``weights="random"``).

    The parameters never require grad and the module stays in eval mode; gradients still flow to the *input* (the
    perceptual loss needs them).
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1"),
        weights: str | Path | None = None,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = [n for n in layers if n not in VGG19_LAYERS]
        if unknown or not layers:
            raise ValueError(f"VGG19Features: unknown layer(s) {unknown or layers}; allowed: {list(VGG19_LAYERS)}")
        self.layers = tuple(sorted(set(layers), key=VGG19_LAYERS.__getitem__))
        depth = VGG19_LAYERS[self.layers[-1]] + 1
        self.features = _vgg19_trunk(depth)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        source = resolve_vgg_weights(weights)
        if source == "random":
            _init_random(self.features, seed)
            self.source = "random"
        else:
            state = _read_features(Path(source), depth)
            missing, unexpected = self.features.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"{source}: not a torchvision VGG-19 file (missing {missing[:4]}, unexpected {unexpected[:4]})"
                )
            self.source = str(source)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """Always eval (no dropout/BN here, but keeps the intent explicit under ``module.train()``)."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out: dict[str, Tensor] = {}
        wanted = {VGG19_LAYERS[n]: n for n in self.layers}
        last = max(wanted)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return out
