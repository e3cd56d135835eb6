"""NIQE, the Natural Image Quality Evaluator: a no-reference ("completely blind") image quality score.

Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer", IEEE Signal Processing Letters
20(3), 2013. Lower is better. This is our own implementation of the conventions of the authors' MATLAB release
(``computequality.m`` / ``estimatemodelparam.m``), which BasicSR's ``calculate_niqe`` also follows:

1. The image is reduced to its luma: BT.601 studio-range Y on the [0, 255] scale (:func:`~sresolve.metrics.protocol.
   rgb_to_y`), ``crop_border`` pixels are shaved from every edge, and Y is rounded to integer levels (the MATLAB
   code runs on an 8-bit grey image; BasicSR rounds too). It is then cropped from the top-left to a multiple of the
   patch size (96).
2. MSCN coefficients (Eq. 1-3): ``(I - μ) / (σ + 1)`` with ``μ`` and ``σ² = |E[I²] - μ²|`` local statistics under a
   7×7 Gaussian window of σ = 7/6 normalised to unit sum, replicate borders (MATLAB ``imfilter(..., 'replicate')``).
3. Per patch 18 features: the fit of the MSCN coefficients (shape α and the mean scale ``(βl + βr) / 2``) and, for
   each of the four pairwise products with the right, lower, lower-right and lower-left neighbour (horizontal,
   vertical, main and secondary diagonal; cyclic inside the patch, MATLAB ``circshift``), the asymmetric generalised
   Gaussian fit (AGGD, Eq. 5-6): shape α, mean ``η = (βr - βl) Γ(2/α) / Γ(1/α)``, left scale βl, right scale βr.
   Shapes are found by moment matching (GGD Eq. 4, the ratio ``r(α) = Γ(2/α)² / (Γ(1/α) Γ(3/α))``) on the grid
   α = 0.2, 0.201, ..., 10. Like the reference (and unlike BRISQUE), the MSCN fit uses the AGGD estimator and the
   features are the scales β, not variances: this is what the published pristine models were fitted with.
4. The same 18 features at a second scale: the image downsampled with MATLAB bicubic ``imresize(I, 0.5)``
   (:func:`sresolve.data.degradation.imresize`), MSCN recomputed there, on the same patch grid (patches of
   ``patch_size / 2``). 36 features per patch.
5. NIQE (Eq. 10): ``sqrt((μ₁ - μ₂)ᵀ ((Σ₁ + Σ₂) / 2)⁺ (μ₁ - μ₂))`` between the pristine model ``(μ₁, Σ₁)`` and the
   multivariate Gaussian of the test image's patches (``μ₂`` = NaN-ignoring mean, ``Σ₂`` = covariance of the patches
   without NaN features), ``⁺`` the pseudo-inverse. All patches of the test image are used; a pristine model
   (:func:`fit_pristine`) keeps only the sharp patches, whose mean local σ exceeds 0.75 × the sharpest patch's.

The standard pristine model (MATLAB's ``modelparameters.mat``, BasicSR's ``niqe_pris_params.npz``, fitted on 125
pristine photographs) is not shipped and cannot be downloaded here: load it with :meth:`PristineModel.load` where it
is available, or fit one with :func:`fit_pristine`. Scores are only comparable between runs that use the same model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sresolve.data.degradation import imresize
from sresolve.metrics.protocol import gaussian_window, rgb_to_y

__all__ = [
    "MSCN_C",
    "MSCN_SIGMA",
    "MSCN_WINDOW",
    "NIQE_PATCH_SIZE",
    "SHARPNESS_THRESHOLD",
    "NIQEImageTooSmallError",
    "PristineModel",
    "estimate_aggd_param",
    "estimate_ggd_param",
    "fit_pristine",
    "mscn",
    "niqe",
    "niqe_batch",
    "niqe_distance",
    "niqe_features",
]

ImageLike = np.ndarray | Tensor | str | os.PathLike

#: Patch side (pixels at the first scale).
NIQE_PATCH_SIZE: int = 96
#: MSCN window side and Gaussian σ (MATLAB ``fspecial('gaussian', 7, 7/6)``), and the stabilising constant C.
MSCN_WINDOW: int = 7
MSCN_SIGMA: float = 7.0 / 6.0
MSCN_C: float = 1.0
#: Pristine fitting keeps patches whose sharpness exceeds this fraction of the image's sharpest patch.
SHARPNESS_THRESHOLD: float = 0.75
#: Number of scales and features per patch and scale.
N_SCALES: int = 2
FEATURES_PER_SCALE: int = 18

# Shape grid α = 0.2, 0.201, ..., 10 of the moment matching, and Γ(k/α) on it (k = 1, 2, 3).
_ALPHA_GRID: np.ndarray = np.arange(200, 10001, dtype=np.float64) / 1000.0
_GAMMA_1 = np.array([math.gamma(1.0 / a) for a in _ALPHA_GRID])
_GAMMA_2 = np.array([math.gamma(2.0 / a) for a in _ALPHA_GRID])
_GAMMA_3 = np.array([math.gamma(3.0 / a) for a in _ALPHA_GRID])
#: Generalised Gaussian moment ratio ``r(α) = (E|x|)² / E[x²] = Γ(2/α)² / (Γ(1/α) Γ(3/α))`` on the grid.
_RATIO_GRID: np.ndarray = _GAMMA_2**2 / (_GAMMA_1 * _GAMMA_3)
# Pairwise-product neighbours (row shift, column shift) of np.roll: horizontal, vertical, main and secondary diagonal.
_PAIR_SHIFTS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1))


class NIQEImageTooSmallError(ValueError):
    """The image (after the border shave) holds fewer 96×96 patches than NIQE needs."""


def _filter_replicate(img: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Separable filtering with replicate borders, the output the size of ``img`` (MATLAB ``imfilter 'replicate'``)."""
    radius = len(kernel_1d) // 2
    h, w = img.shape
    padded = np.pad(img, radius, mode="edge")
    rows = sum(kernel_1d[k] * padded[k : k + h, :] for k in range(len(kernel_1d)))
    return sum(kernel_1d[k] * rows[:, k : k + w] for k in range(len(kernel_1d)))


def mscn(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MSCN coefficients (Eq. 1) and the local standard deviation σ (Eq. 3) of a grey image, both float64.

    ``μ = w * I`` and ``σ = sqrt(|w * I² - μ²|)`` with ``w`` the normalised 7×7 Gaussian window (σ = 7/6) and
    replicate borders; MSCN ``= (I - μ) / (σ + C)`` with ``C = 1``.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"mscn expects a 2-D grey image, got shape {y.shape}")
    kernel = gaussian_window(MSCN_WINDOW, MSCN_SIGMA).numpy()  # MATLAB fspecial('gaussian', 7, 7/6), separable
    mu = _filter_replicate(y, kernel)
    sigma = np.sqrt(np.abs(_filter_replicate(y * y, kernel) - mu * mu))
    return (y - mu) / (sigma + MSCN_C), sigma


def _match_shape(ratio: np.ndarray) -> np.ndarray:
    """Grid indices of the α whose ``r(α)`` is nearest to each ``ratio``; -1 where the ratio is undefined (NaN)."""
    ratio = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    idx = np.full(ratio.shape, -1, dtype=np.int64)
    ok = np.isfinite(ratio)
    if ok.any():
        idx[ok] = np.argmin(np.abs(_RATIO_GRID[None, :] - ratio[ok][:, None]), axis=1)
    return idx


def _take(grid: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``grid[idx]`` with NaN where ``idx == -1``."""
    return np.where(idx >= 0, grid[np.maximum(idx, 0)], np.nan)


def _aggd_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD moment-matching fit (Eq. 5-6) of every row of ``x`` (n, m): shape α, left scale βl, right scale βr.

    ``σl² = E[x² | x < 0]``, ``σr² = E[x² | x > 0]`` (zeros belong to neither side), ``γ̂ = σl / σr``,
    ``r̂ = (E|x|)² / E[x²]``, ``R̂ = r̂ (γ̂³ + 1)(γ̂ + 1) / (γ̂² + 1)²``; α is the grid point with ``r(α)`` nearest to
    ``R̂`` and ``β = σ sqrt(Γ(1/α) / Γ(3/α))`` on each side. Undefined moments (an empty side, a constant row) give NaN.
    """
    neg = x < 0
    pos = x > 0
    sq = x * x
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        gamma_hat = left_std / right_std
        r_hat = np.abs(x).mean(axis=1) ** 2 / sq.mean(axis=1)
        r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    idx = _match_shape(r_hat_norm)
    alpha = _take(_ALPHA_GRID, idx)
    scale = np.sqrt(_take(_GAMMA_1, idx) / _take(_GAMMA_3, idx))
    return alpha, left_std * scale, right_std * scale


def estimate_aggd_param(x: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit (Eq. 5-6) of the samples ``x`` (any shape): ``(α, βl, βr)``.

    Moment matching on the grid α ∈ {0.2, 0.201, ..., 10}; see :func:`_aggd_rows`. NaN where a moment is undefined.
    """
    alpha, beta_l, beta_r = _aggd_rows(np.asarray(x, dtype=np.float64).reshape(1, -1))
    return float(alpha[0]), float(beta_l[0]), float(beta_r[0])


def estimate_ggd_param(x: np.ndarray) -> tuple[float, float]:
    """Zero-mean generalised Gaussian fit (Eq. 4) of the samples ``x`` (any shape): ``(α, σ²)``.

    ``σ² = E[x²]`` and α the grid point (0.2, 0.201, ..., 10) whose ``r(α) = Γ(2/α)² / (Γ(1/α) Γ(3/α))`` is nearest
    to ``(E|x|)² / E[x²]``. (The NIQE features use the AGGD fit of :func:`estimate_aggd_param`, as the reference.)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    variance = float(np.mean(x * x))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.mean(np.abs(x)) ** 2 / variance
    return float(_take(_ALPHA_GRID, _match_shape(ratio))[0]), variance


def _to_patches(img: np.ndarray, n_rows: int, n_cols: int, size: int) -> np.ndarray:
    """Split the top-left ``n_rows·size × n_cols·size`` area of ``img`` into ``(n_rows·n_cols, size, size)``,
    patches in row-major order."""
    area = img[: n_rows * size, : n_cols * size]
    return area.reshape(n_rows, size, n_cols, size).transpose(0, 2, 1, 3).reshape(-1, size, size)


def _patch_features(coeffs: np.ndarray) -> np.ndarray:
    """The 18 features of every MSCN patch of ``coeffs`` (n, p, p): ``(n, 18)``."""
    n = coeffs.shape[0]
    flat = coeffs.reshape(n, -1)
    alpha, beta_l, beta_r = _aggd_rows(flat)
    columns = [alpha, (beta_l + beta_r) / 2.0]
    for shift in _PAIR_SHIFTS:
        products = (coeffs * np.roll(coeffs, shift, axis=(1, 2))).reshape(n, -1)
        alpha, beta_l, beta_r = _aggd_rows(products)
        with np.errstate(invalid="ignore"):
            eta = (beta_r - beta_l) * _gamma_ratio_21(alpha)
        columns += [alpha, eta, beta_l, beta_r]
    return np.stack(columns, axis=1)


def _gamma_ratio_21(alpha: np.ndarray) -> np.ndarray:
    """``Γ(2/α) / Γ(1/α)`` for α on the shape grid (NaN for NaN)."""
    idx = np.where(np.isfinite(alpha), np.rint(np.nan_to_num(alpha) * 1000.0).astype(np.int64) - 200, -1)
    return _take(_GAMMA_2, idx) / _take(_GAMMA_1, idx)


def _check_patch_grid(shape: tuple[int, ...], patch_size: int, min_patches: int = 1) -> tuple[int, int]:
    """Number of patch rows and columns of an image of ``shape``; ValueError when there are too few."""
    if not isinstance(patch_size, int) or patch_size < 2 or patch_size % 2:
        raise ValueError(
            f"patch_size must be an even integer >= 2 (the second scale uses patch_size / 2), got {patch_size!r}"
        )
    h, w = shape
    n_rows, n_cols = h // patch_size, w // patch_size
    if n_rows * n_cols < min_patches:
        need = (
            f"at least {patch_size}×{patch_size} px (one patch; {patch_size // 2}×{patch_size // 2} at the half-size "
            "second scale)"
            if min_patches == 1
            else f"at least two {patch_size}×{patch_size} patches, e.g. {patch_size}×{2 * patch_size} px (the "
            "covariance of the image's patch features needs two patches)"
        )
        raise NIQEImageTooSmallError(f"NIQE: image of {h}×{w} px (after crop_border) is too small; it needs {need}")
    return n_rows, n_cols


def _features_and_sharpness(y: np.ndarray, patch_size: int, min_patches: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Patch features ``(n, 36)`` and patch sharpness ``(n,)`` (mean local σ at the first scale) of a grey image."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"NIQE expects a 2-D luma image, got shape {y.shape}")
    n_rows, n_cols = _check_patch_grid(y.shape, patch_size, min_patches)
    img = y[: n_rows * patch_size, : n_cols * patch_size]
    per_scale = []
    sharpness = np.empty(0)
    for scale in range(1, N_SCALES + 1):
        size = patch_size // scale
        coeffs, sigma = mscn(img)
        per_scale.append(_patch_features(_to_patches(coeffs, n_rows, n_cols, size)))
        if scale == 1:
            sharpness = _to_patches(sigma, n_rows, n_cols, size).mean(axis=(1, 2))
        if scale < N_SCALES:
            img = imresize(torch.from_numpy(np.ascontiguousarray(img)), 0.5).numpy()
    return np.concatenate(per_scale, axis=1), sharpness


def niqe_features(y: np.ndarray, patch_size: int = NIQE_PATCH_SIZE) -> np.ndarray:
    """NIQE features of one grey (luma) image on the [0, 255] scale: ``(n_patches, 36)`` float64.

    The image is cropped from the top-left to a multiple of ``patch_size``; patches are in row-major order; columns
    0-17 are the first scale, 18-35 the half-size second scale, each ``[α, (βl + βr)/2]`` of the MSCN coefficients
    followed by ``[α, η, βl, βr]`` of the horizontal, vertical, main-diagonal and secondary-diagonal products.

    Raises:
        ValueError: ``y`` is not 2-D, or smaller than one patch.
    """
    return _features_and_sharpness(y, patch_size)[0]


def _nan_cov(features: np.ndarray) -> np.ndarray:
    """Covariance (ddof 1) of the rows of ``features`` that contain no NaN (MATLAB ``nancov``)."""
    rows = features[~np.isnan(features).any(axis=1)]
    if rows.shape[0] < 2:
        raise ValueError(
            f"NIQE: only {rows.shape[0]} patch(es) with finite features; the covariance needs at least two "
            "(is the image constant or too small?)"
        )
    return np.cov(rows, rowvar=False)


_MODEL_DESCRIPTION = (
    "the NIQE pristine model parameters (mean and covariance of the 36 patch features of pristine images, e.g. "
    "MATLAB's modelparameters.mat from the authors' NIQE release or BasicSR's niqe_pris_params.npz; they cannot be "
    "downloaded here, so copy the file in or fit one with sresolve.metrics.niqe.fit_pristine)"
)


@dataclass
class PristineModel:
    """Multivariate Gaussian of the patch features of pristine images: ``mu`` (36,) and ``cov`` (36, 36)."""

    mu: np.ndarray
    cov: np.ndarray

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64).reshape(-1)
        self.cov = np.asarray(self.cov, dtype=np.float64)
        d = self.mu.shape[0]
        if self.cov.shape != (d, d):
            raise ValueError(f"PristineModel: cov must be {d}×{d} to match mu {self.mu.shape}, got {self.cov.shape}")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PristineModel:
        """Load ``.npz`` (keys ``mu_prisparam``/``cov_prisparam`` or ``mu``/``cov``) or MATLAB ``.mat``.

        Raises:
            FileNotFoundError: the file does not exist (the message names it and what it should contain).
            ImportError: a ``.mat`` file without scipy installed.
            ValueError: unknown extension or missing keys.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NIQE pristine model file not found: {path}. Expected {_MODEL_DESCRIPTION}.")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path) as data:
                arrays = {key: data[key] for key in data.files}
        elif suffix == ".mat":
            try:
                import scipy.io
            except ImportError as err:
                raise ImportError(
                    f"reading {path} needs scipy (scipy.io.loadmat), which is not installed; convert the file to .npz "
                    "with keys mu_prisparam and cov_prisparam"
                ) from err
            arrays = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
        else:
            raise ValueError(f"NIQE pristine model must be a .npz or .mat file, got {path}")
        for mu_key, cov_key in (("mu_prisparam", "cov_prisparam"), ("mu", "cov")):
            if mu_key in arrays and cov_key in arrays:
                return cls(mu=arrays[mu_key], cov=arrays[cov_key])
        raise ValueError(
            f"{path} has no NIQE model keys (mu_prisparam and cov_prisparam, or mu and cov); found {sorted(arrays)}"
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``mu_prisparam`` and ``cov_prisparam`` to an ``.npz`` file (BasicSR's key names)."""
        with open(path, "wb") as f:
            np.savez(f, mu_prisparam=self.mu, cov_prisparam=self.cov)


def _to_luma(img: ImageLike, crop_border: int = 0) -> np.ndarray:
    """Rounded BT.601 studio-range luma on the [0, 255] scale of one image, ``crop_border`` shaved, float64 (H, W).

    Accepts an RGB tensor ``(3, H, W)`` / ``(1, 3, H, W)`` in [0, 1] (or uint8), an ``(H, W, 3)`` uint8 numpy image,
    an image file path, or a 2-D numpy array taken as luma on the [0, 255] scale already (used as is, not rounded).
    """
    if isinstance(img, (str, os.PathLike)):
        from sresolve.data.io import read_image_uint8

        img = read_image_uint8(img)
    if isinstance(img, np.ndarray) and img.ndim == 2:
        y = img.astype(np.float64)
    else:
        if isinstance(img, np.ndarray):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(
                    f"NIQE: numpy images must be (H, W, 3) uint8 RGB or (H, W) luma, got {img.shape} {img.dtype}"
                )
            img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if not isinstance(img, Tensor):
            raise TypeError(f"NIQE: expected a tensor, numpy image or path, got {type(img).__name__}")
        if img.dim() == 4 and img.shape[0] == 1:
            img = img[0]
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"NIQE: expected one RGB image (3, H, W), got shape {tuple(img.shape)}")
        y = np.round(rgb_to_y(img.detach().cpu())[0].numpy())
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return y


def fit_pristine(
    images: Iterable[ImageLike],
    patch_size: int = NIQE_PATCH_SIZE,
    sharpness_threshold: float = SHARPNESS_THRESHOLD,
) -> PristineModel:
    """Fit the pristine multivariate Gaussian (``estimatemodelparam.m``) on a set of undistorted images.

    Per image, only the patches whose sharpness (mean local σ at the first scale) exceeds ``sharpness_threshold`` ×
    the image's largest patch sharpness are kept; ``mu`` is the NaN-ignoring mean of all kept patches and ``cov`` the
    covariance of the kept patches without NaN features. Images are as in :func:`niqe`.
    """
    kept = []
    for img in images:
        features, sharpness = _features_and_sharpness(_to_luma(img), patch_size)
        kept.append(features[sharpness > sharpness_threshold * sharpness.max()])
    if not kept:
        raise ValueError("fit_pristine needs at least one image")
    pooled = np.concatenate(kept, axis=0)
    return PristineModel(mu=np.nanmean(pooled, axis=0), cov=_nan_cov(pooled))


def niqe_distance(features: np.ndarray, model: PristineModel) -> float:
    """Eq. 10 between ``model`` and the Gaussian of the patch ``features`` (n, 36) of a test image."""
    mu = np.nanmean(features, axis=0)
    diff = model.mu - mu
    inv = np.linalg.pinv((model.cov + _nan_cov(features)) / 2.0)
    return float(np.sqrt(diff @ inv @ diff))


def niqe(img: ImageLike, model: PristineModel, crop_border: int = 0, patch_size: int = NIQE_PATCH_SIZE) -> float:
    """NIQE score of one image (lower is better).

    Args:
        img: RGB tensor ``(3, H, W)`` or ``(1, 3, H, W)`` in [0, 1] (or uint8), ``(H, W, 3)`` uint8 numpy image, an
            image path, or a 2-D numpy luma image on the [0, 255] scale.
        model: pristine model (:meth:`PristineModel.load` or :func:`fit_pristine`).
        crop_border: pixels shaved from each edge before scoring.
        patch_size: patch side (the published models use 96).

    Raises:
        ValueError: the image after ``crop_border`` holds fewer than two patches (the covariance needs two).
    """
    y = _to_luma(img, crop_border)
    features, _ = _features_and_sharpness(y, patch_size, min_patches=2)
    if model.mu.shape[0] != features.shape[1]:
        raise ValueError(f"model has {model.mu.shape[0]} features, the image {features.shape[1]}")
    return niqe_distance(features, model)


def niqe_batch(images: Tensor, model: PristineModel, crop_border: int = 0, patch_size: int = NIQE_PATCH_SIZE) -> Tensor:
    """NIQE of every image of a ``(B, 3, H, W)`` batch in [0, 1]: float64 tensor ``(B,)`` on the batch's device."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"niqe_batch expects a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    scores = [niqe(image, model, crop_border, patch_size) for image in images]
    return torch.tensor(scores, dtype=torch.float64, device=images.device)
