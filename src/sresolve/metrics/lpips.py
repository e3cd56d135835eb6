"""LPIPS, the Learned Perceptual Image Patch Similarity: a full-reference perceptual distance (lower is better).

Zhang, Isola, Efros, Shechtman and Wang, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018 (the SAFMN supplement reports it in Table 5). The distance between two images is
``Σ_l mean_hw ‖w_l ⊙ (ŷ_l^0 - ŷ_l^1)‖²``: ``ŷ_l`` the channel-normalised activations of layer ``l`` of an ImageNet
classifier (AlexNet by default, the paper's recommended "LPIPS-Alex"), ``w_l`` learned per-channel weights (the
"linear layers", version 0.1 of the authors' release).

The network is torchmetrics' ``_LPIPS`` (its own port of the authors' code, with the linear layers shipped in
``torchmetrics/functional/image/lpips_models/{alex,vgg,squeeze}.pth``). Its backbone would be downloaded by
torchvision; here it is read from a local file instead (:func:`load_lpips`): the torchvision ImageNet weights file in
the torch hub cache (``torch.hub.get_dir()/checkpoints/``, i.e. ``$TORCH_HOME/hub/checkpoints``), or an explicit
path, in torchvision's layout (``features.N.weight``), copied into torchmetrics' slices of the network.
``backbone="random"`` keeps deterministic random backbone weights: only for tests of the plumbing, the values are
not LPIPS.

Input convention: RGB in [0, 1] (torchmetrics' ``normalize=True``: mapped to [-1, 1], then the network's own
shift/scale). Under the evaluation protocol (:meth:`LPIPS.score`) both images are first rounded to 8-bit levels and
``crop_border`` pixels are shaved, as for PSNR/SSIM (:mod:`sresolve.metrics.protocol`). The network runs in float32
with autocast disabled; the per-image distances are returned as float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from sresolve.metrics.protocol import quantize, shave
from sresolve.ops.precision import autocast_disabled

__all__ = [
    "LPIPS",
    "LPIPS_NETS",
    "RANDOM_BACKBONE",
    "LPIPSBackboneError",
    "LPIPSBackboneNotFoundError",
    "backbone_file",
    "check_lpips_net",
    "load_lpips",
]

#: LPIPS network name → (torchvision architecture, file name of its ImageNet weights in the torch hub cache).
LPIPS_NETS: dict[str, tuple[str, str]] = {
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16", "vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
}
#: ``backbone`` value that keeps random backbone weights (tests only).
RANDOM_BACKBONE = "random"
#: Smallest image side (after shaving) each backbone accepts: every layer must keep at least one pixel.
_MIN_SIDE: dict[str, int] = {"alex": 31, "vgg": 16, "squeeze": 17}
#: Seed of the random backbone (and of the throw-away initialisation of a backbone that is then loaded).
_SEED = 0


class LPIPSBackboneNotFoundError(FileNotFoundError):
    """The ImageNet backbone weights file of LPIPS is not where it was looked for (the message says where to put it)."""


class LPIPSBackboneError(ValueError):
    """A backbone weights file that cannot be read or does not fit the network (the message names the file)."""


def check_lpips_net(net: object, key: str = "lpips_net") -> str:
    """``net`` if it names an LPIPS network (:data:`LPIPS_NETS`), else a ``ValueError`` naming ``key``."""
    if not isinstance(net, str) or net not in LPIPS_NETS:
        raise ValueError(f"{key}={net!r}: unknown LPIPS network; allowed: {sorted(LPIPS_NETS)}")
    return net


def backbone_file(net: str = "alex") -> Path:
    """Where the torchvision ImageNet weights of ``net``'s backbone are looked for: ``<torch hub dir>/checkpoints/``
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_NETS[check_lpips_net(net, "net")][1]


def _torchvision_key(name: str) -> str:
    """torchmetrics backbone parameter name → torchvision name: ``slice2.3.weight`` (AlexNet, VGG) and
    ``slices.1.3.squeeze.weight`` (SqueezeNet) → ``features.3.weight`` / ``features.3.squeeze.weight``."""
    parts = name.split(".")
    rest = parts[2:] if parts[0] == "slices" else parts[1:]
    return ".".join(["features", *rest])


class LPIPS(nn.Module):
    """LPIPS (Zhang et al., CVPR 2018) around torchmetrics' ``_LPIPS`` network with a given backbone state.

    Prefer :func:`load_lpips`, which finds and reads the backbone file.

    Args:
        net: ``alex`` (default, LPIPS-Alex), ``vgg`` or ``squeeze``.
        backbone: the backbone weights in torchvision layout (``features.N.weight``, extra keys such as
            ``classifier.*`` ignored), or None for deterministic random weights (tests only).
        source: where the backbone came from (a path or ``random``), for :meth:`describe` and error messages.

    Raises:
        ValueError: unknown ``net``.
        LPIPSBackboneError: ``backbone`` lacks a backbone key or a shape differs (names ``source``).
    """

    def __init__(self, net: str = "alex", backbone: Mapping[str, Tensor] | None = None, source: str = "") -> None:
        super().__init__()
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        self.net_name = check_lpips_net(net, "net")
        self.source = source or (RANDOM_BACKBONE if backbone is None else "given state dict")
        # torchvision initialises the backbone (and the unused classifier) from the global RNG: fork it, so that the
        # random backbone is the same in every process and building the metric never shifts the training stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            self.network = _NoTrainLpips(pretrained=True, net=net, pnet_rand=True)
        if backbone is not None:
            self._load_backbone(backbone)
        self.network.requires_grad_(False).eval()

    @property
    def random_backbone(self) -> bool:
        """True when the backbone keeps random weights (the values are then not LPIPS)."""
        return self.source == RANDOM_BACKBONE

    def _load_backbone(self, state: Mapping[str, Tensor]) -> None:
        inner = state.get("state_dict") if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping):  # a checkpoint container
            state = inner
        arch, filename = LPIPS_NETS[self.net_name]
        expected = f"torchvision {arch} ImageNet weights ({filename}) in torchvision layout (features.N.weight)"
        if not isinstance(state, Mapping):
            raise LPIPSBackboneError(f"{self.source}: expected a state dict of {expected}, got {type(state).__name__}")
        target = self.network.net.state_dict()
        mapped: dict[str, Tensor] = {}
        missing: list[str] = []
        wrong: list[str] = []
        for name, value in target.items():
            key = _torchvision_key(name)
            if key not in state:
                missing.append(key)
            elif not isinstance(state[key], Tensor) or tuple(state[key].shape) != tuple(value.shape):
                got = tuple(state[key].shape) if isinstance(state[key], Tensor) else type(state[key]).__name__
                wrong.append(f"{key} {got} (expected {tuple(value.shape)})")
            else:
                mapped[name] = state[key]
        if missing or wrong:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} key(s) such as {missing[:3]}")
            if wrong:
                parts.append(f"{len(wrong)} shape mismatch(es) such as {wrong[:3]}")
            raise LPIPSBackboneError(
                f"{self.source}: does not fit the LPIPS-{self.net_name} backbone: {'; '.join(parts)}; "
                f"expected {expected}"
            )
        self.network.net.load_state_dict(mapped, strict=True)

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-image LPIPS ``[B]`` (float64, on the device of ``x``) between RGB images in [0, 1], ``B×3×H×W`` or
        ``3×H×W``; no quantisation or shave (see :meth:`score`)."""
        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, Tensor):
                raise TypeError(f"LPIPS: {name} must be a torch.Tensor, got {type(t).__name__}")
        if x.shape != y.shape or x.dim() not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(
                f"LPIPS expects two RGB images of the same shape B×3×H×W or 3×H×W, got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        h, w = x.shape[-2:]
        side = _MIN_SIDE[self.net_name]
        if min(h, w) < side:
            raise ValueError(f"LPIPS-{self.net_name} needs images of at least {side}×{side} px, got {h}×{w}")
        if x.dim() == 3:
            x, y = x.unsqueeze(0), y.unsqueeze(0)
        device = next(self.network.parameters()).device
        with autocast_disabled(device.type):
            a = x.to(device=device, dtype=torch.float32).clamp(0.0, 1.0)
            b = y.to(device=device, dtype=torch.float32).clamp(0.0, 1.0)
            d = self.network(a, b, normalize=True)
        return d.reshape(-1).to(device=x.device, dtype=torch.float64)

    def score(self, sr: Tensor, hr: Tensor, crop_border: int = 0, *, quantize_inputs: bool = True) -> Tensor:
        """Per-image LPIPS ``[B]`` under the evaluation protocol: both images rounded to 8-bit levels (unless
        ``quantize_inputs`` is False) and ``crop_border`` pixels shaved, then RGB LPIPS."""
        if quantize_inputs:
            sr, hr = quantize(sr), quantize(hr)
        return self(shave(sr, crop_border), shave(hr, crop_border))

    def describe(self) -> str:
        """One line naming the network and where its backbone came from."""
        arch = LPIPS_NETS[self.net_name][0]
        backbone = (
            "RANDOM backbone weights (test only, not comparable to LPIPS)"
            if self.random_backbone
            else f"{arch} backbone {Path(self.source).name}"
        )
        return f"LPIPS-{self.net_name} (Zhang et al. 2018; torchmetrics linear layers v0.1, {backbone}) on RGB"

    def extra_repr(self) -> str:
        return f"net={self.net_name!r}, backbone={self.source!r}"


def load_lpips(
    net: str = "alex",
    backbone: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    key: str = "lpips_backbone",
) -> LPIPS:
    """LPIPS with its backbone read from a local file (nothing is downloaded).

    Args:
        net: ``alex`` (default), ``vgg`` or ``squeeze``.
        backbone: None = the torchvision ImageNet weights file in the torch hub cache (:func:`backbone_file`); a path
            to such a file (torchvision layout, read with ``torch.load(..., weights_only=True)``); or ``"random"`` for
            random backbone weights (tests of the plumbing only).
        device: where the network is put.
        key: the config key that sets ``backbone``, named in the messages.

    Raises:
        ValueError: unknown ``net``.
        LPIPSBackboneNotFoundError: the file is absent (a :class:`FileNotFoundError`; the message names the file, the
            hub folder to put it in and ``key``).
        LPIPSBackboneError: the file cannot be read or does not fit the backbone (names the file).
    """
    net = check_lpips_net(net)
    if isinstance(backbone, str) and backbone.strip().lower() == RANDOM_BACKBONE:
        return LPIPS(net, None, source=RANDOM_BACKBONE).to(device)
    arch, filename = LPIPS_NETS[net]
    if backbone is None or str(backbone).strip() == "":
        path = backbone_file(net)
        if not path.is_file():
            raise LPIPSBackboneNotFoundError(
                f"LPIPS-{net} needs the torchvision {arch} ImageNet weights {filename}, not found in the torch hub "
                f"cache {path.parent} (torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it): copy the file "
                f"there, or give its path with {key}=<path>"
            )
    else:
        path = Path(backbone).expanduser()
        if not path.is_file():
            raise LPIPSBackboneNotFoundError(
                f"{key}={str(backbone)!r}: no such file; expected the torchvision {arch} ImageNet weights "
                f"({filename}), which are also found without {key} in the torch hub cache {backbone_file(net).parent}"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or not a weights-only pickle
        reason = (str(err).splitlines() or [""])[0]
        raise LPIPSBackboneError(
            f"{path}: cannot read the LPIPS-{net} backbone weights ({type(err).__name__}: {reason}); "
            f"expected the torchvision {arch} ImageNet weights ({filename}) saved with torch.save"
        ) from err
    return LPIPS(net, state, source=str(path)).to(device)
