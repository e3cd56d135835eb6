"""Perceptual metrics next to PSNR/SSIM: LPIPS (full reference) and NIQE (no reference), both lower-is-better.

* LPIPS: Zhang, Isola, Efros, Shechtman and Wang, "The Unreasonable Effectiveness of Deep Features as a Perceptual
  Metric", CVPR 2018 (:mod:`sresolve.metrics.lpips`): RGB, after the protocol's 8-bit rounding and border shave.
* NIQE: Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer", IEEE SPL 2013
  (:mod:`sresolve.metrics.niqe`): the SR output only, 8-bit rounded, on the rounded BT.601 Y channel (MATLAB
  convention), after the shave.

Both need files that cannot be downloaded here: the ImageNet backbone of LPIPS (torch hub cache or an explicit path)
and a NIQE pristine model given by the user. :func:`perceptual_from_config` turns the config keys of ``sresolve-test``
(``lpips``, ``lpips_net``, ``lpips_backbone``, ``niqe``, ``niqe_model``) and of validation (``val.<same keys>``) into
a :class:`PerceptualMetrics`; a missing file disables that metric with one log line that says which file is needed,
it never fails the run, while a wrong value or an unreadable file is an error naming the key or file.

:class:`LPIPSMetric` and :class:`NIQEMetric` are the validation-time data-set means (float64 sum and count, reduced
with ``"sum"`` across processes, like :class:`~sresolve.metrics.modules.PSNRY`). The LPIPS network is kept outside
the module tree, so it never enters a checkpoint and a run can switch ``val.lpips`` on or off when resumed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sresolve.metrics.lpips import LPIPS, LPIPSBackboneNotFoundError, check_lpips_net, load_lpips
from sresolve.metrics.modules import ImageQualityMetric
from sresolve.metrics.niqe import NIQEImageTooSmallError, PristineModel, niqe_batch
from sresolve.metrics.protocol import quantize
from sresolve.validation import check_bool

__all__ = [
    "PERCEPTUAL_KEYS",
    "PERCEPTUAL_METRICS",
    "LPIPSMetric",
    "NIQEMetric",
    "PerceptualMetrics",
    "perceptual_from_config",
]

log = logging.getLogger("sresolve.metrics")

#: The perceptual metric names, in column order.
PERCEPTUAL_METRICS: tuple[str, ...] = ("lpips", "niqe")


@dataclass
class PerceptualMetrics:
    """The perceptual metrics of one evaluation: ``lpips`` (None = not computed) and the NIQE pristine model
    ``niqe_model`` (None = not computed), ``niqe_source`` its file."""

    lpips: LPIPS | None = None
    niqe_model: PristineModel | None = None
    niqe_source: str = ""

    @property
    def names(self) -> list[str]:
        """The metrics computed, among ``lpips``, ``niqe``."""
        return [n for n, on in (("lpips", self.lpips is not None), ("niqe", self.niqe_model is not None)) if on]

    def __bool__(self) -> bool:
        return bool(self.names)

    def score(self, sr: Tensor, hr: Tensor, crop_border: int, *, quantize_inputs: bool = True) -> dict[str, Tensor]:
        """Per-image scores ``{name: Tensor[B]}`` (float64) of the SR batch ``sr`` against ``hr`` (LPIPS; NIQE looks
        at ``sr`` only), both ``B×3×H×W`` in [0, 1], with ``crop_border`` pixels shaved."""
        out: dict[str, Tensor] = {}
        if self.lpips is not None:
            out["lpips"] = self.lpips.score(sr, hr, crop_border, quantize_inputs=quantize_inputs)
        if self.niqe_model is not None:
            out["niqe"] = _niqe_scores(sr, self.niqe_model, crop_border, quantize_inputs)
        return out

    def describe(self) -> str:
        """How the perceptual scores were computed (printed under the results tables); empty when none is."""
        parts = []
        if self.lpips is not None:
            parts.append(self.lpips.describe())
        if self.niqe_model is not None:
            parts.append(
                f"NIQE (Mittal et al. 2013) of the SR output on rounded Y, pristine model {Path(self.niqe_source).name}"
            )
        return "; ".join(parts) + ("; lower is better" if parts else "")


def _niqe_scores(sr: Tensor, model: PristineModel, crop_border: int, quantize_inputs: bool) -> Tensor:
    x = (sr.unsqueeze(0) if sr.dim() == 3 else sr).detach().cpu()
    x = x.to(torch.float64) if x.is_floating_point() else x
    x = quantize(x) if quantize_inputs else x
    try:
        return niqe_batch(x, model, crop_border=crop_border).to(sr.device)
    except ValueError as err:
        raise type(err)(f"{err} (image {tuple(x.shape[-2:])}, crop_border={crop_border})") from None


def _optional_text(value: Any, key: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if not isinstance(value, (str, Path)):
        raise ValueError(f"{key} must be a path (or null), got {value!r}")
    return str(value)


#: The config keys of the perceptual metrics (``sresolve-test``: top level; training: under ``val.``) and defaults.
PERCEPTUAL_KEYS: dict[str, Any] = {
    "lpips": False,
    "lpips_net": "alex",
    "lpips_backbone": None,
    "niqe": False,
    "niqe_model": None,
}


def perceptual_from_config(
    cfg: Mapping[str, Any] | None = None,
    *,
    prefix: str = "",
    device: torch.device | str = "cpu",
    logger: logging.Logger | None = None,
    **keys: Any,
) -> PerceptualMetrics:
    """The perceptual metrics asked for by the config keys (:data:`PERCEPTUAL_KEYS`), read from ``cfg`` (the
    ``sresolve-test`` config or the ``val`` node) and/or given as keywords (which win); ``prefix`` = ``""`` for
    ``sresolve-test``, ``"val."`` for validation, used in the messages.

    Keys:
        lpips: compute LPIPS.
        lpips_net: ``alex`` (default), ``vgg`` or ``squeeze``.
        lpips_backbone: None = the torchvision ImageNet weights in the torch hub cache; a path; ``random`` (tests).
        niqe: compute NIQE.
        niqe_model: the NIQE pristine model file (``.npz`` with ``mu_prisparam``/``cov_prisparam``, or ``.mat``).
        device: where the LPIPS network is put.
        logger: where the one-line "skipped" messages go (default ``sresolve.metrics``).

    Raises:
        ValueError: a value of the wrong type, an unknown ``lpips_net``, an unreadable or unfit backbone or NIQE
            model file (the message names the key or the file).
    """
    unknown = sorted(set(keys) - set(PERCEPTUAL_KEYS))
    if unknown:
        raise TypeError(f"perceptual_from_config: unknown keys {unknown}; allowed: {list(PERCEPTUAL_KEYS)}")
    values = {k: (cfg or {}).get(k, default) for k, default in PERCEPTUAL_KEYS.items()} | keys
    lpips_net, lpips_backbone, niqe_model = values["lpips_net"], values["lpips_backbone"], values["niqe_model"]
    logger = logger or log
    want_lpips = check_bool(values["lpips"], f"{prefix}lpips")
    want_niqe = check_bool(values["niqe"], f"{prefix}niqe")
    check_lpips_net(lpips_net, f"{prefix}lpips_net")
    backbone = _optional_text(lpips_backbone, f"{prefix}lpips_backbone")
    model_path = _optional_text(niqe_model, f"{prefix}niqe_model")
    out = PerceptualMetrics()
    if want_lpips:
        try:
            out.lpips = load_lpips(lpips_net, backbone, device=device, key=f"{prefix}lpips_backbone")
        except LPIPSBackboneNotFoundError as err:
            logger.warning("LPIPS skipped: %s", err)
    if want_niqe:
        if model_path is None:
            logger.warning(
                "NIQE skipped: no pristine model; give %sniqe_model=<path to a NIQE pristine model, .npz with "
                "mu_prisparam and cov_prisparam (BasicSR niqe_pris_params.npz) or MATLAB modelparameters.mat>",
                prefix,
            )
        else:
            try:
                out.niqe_model = PristineModel.load(model_path)
                out.niqe_source = model_path
            except FileNotFoundError as err:
                logger.warning("NIQE skipped: %sniqe_model=%r: %s", prefix, model_path, err)
            except (ValueError, ImportError, OSError) as err:
                raise ValueError(f"{prefix}niqe_model={model_path!r}: {err}") from None
    return out


class LPIPSMetric(ImageQualityMetric):
    """Data-set LPIPS: mean of per-image LPIPS (:meth:`sresolve.metrics.lpips.LPIPS.score`: 8-bit rounded, shaved,
    RGB); lower is better. ``lpips`` is shared between metrics and kept out of the module tree (not in state dicts);
    it follows the device of the images."""

    higher_is_better = False
    plot_lower_bound = 0.0

    def __init__(self, lpips: LPIPS, crop_border: int, quantize: bool = True, **kwargs: Any) -> None:
        super().__init__(crop_border, y_channel=False, quantize=quantize, **kwargs)
        object.__setattr__(self, "_lpips", lpips)

    def per_image(self, sr: Tensor, hr: Tensor) -> Tensor:
        net: LPIPS = self.__dict__["_lpips"]
        if next(net.parameters()).device != sr.device:
            net.to(sr.device)
        return net.score(sr, hr, self.protocol.crop_border, quantize_inputs=self.protocol.quantize)


class NIQEMetric(ImageQualityMetric):
    """Data-set NIQE of the SR outputs (no reference; ``hr`` is ignored): mean of per-image NIQE on the rounded
    BT.601 Y channel of the 8-bit SR image, shaved; lower is better. Computed on the CPU (NumPy)."""

    higher_is_better = False
    plot_lower_bound = 0.0

    def __init__(self, model: PristineModel, crop_border: int, quantize: bool = True, **kwargs: Any) -> None:
        super().__init__(crop_border, y_channel=True, quantize=quantize, **kwargs)
        self.model = model

    def per_image(self, sr: Tensor, hr: Tensor) -> Tensor:
        return _niqe_scores(sr, self.model, self.protocol.crop_border, self.protocol.quantize)

    def update(self, sr: Tensor, hr: Tensor) -> None:
        """As :meth:`ImageQualityMetric.update`, but a batch too small for NIQE is left out of the mean with one
        warning (validation must not stop a training run; ``sresolve-test`` reports it as an error instead)."""
        try:
            super().update(sr, hr)
        except NIQEImageTooSmallError as err:
            if not self.__dict__.get("_warned"):
                log.warning("%s; such validation images are left out of the NIQE mean", err)
                self.__dict__["_warned"] = True
