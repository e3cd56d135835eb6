"""Image reading and writing for super-resolution data.

Conventions (frameworks spec §2.6: "tensors RGB, convert at IO"):

* Tensors are float32, channels-first ``(3, H, W)``, RGB, values in ``[0, 1]``.
* Arrays returned by the fast training path are ``(H, W, 3)`` ``uint8`` RGB.
* Pixel data is used as stored: EXIF orientation tags are *not* applied (benchmark and DIV2K files are PNGs without
  them, and applying them to only one side of an HR/LR pair would misalign it).
* Writing rounds to the nearest 8-bit level (``floor(255 x + 0.5)``, i.e. MATLAB ``im2uint8``; never truncation,
  frameworks spec §2.1 step 8) and replaces the target atomically, so readers never see a half-written file.

Mode handling in :func:`read_image` (Pillow modes):

==========================  =======================================================================
``RGB``                     as is, ``/255``
``L``, ``1``                replicated to 3 channels
``I;16`` (16-bit gray PNG)  ``/65535``, replicated
``I`` (32-bit int)          treated as 16-bit data: ``/65535``, clipped to ``[0, 1]``
``F`` (32-bit float)        taken as already in ``[0, 1]``, clipped
``RGBA``, ``LA``, ``PA``,   alpha channel dropped (no compositing)
``P``                       palette expanded (through RGBA when it has a transparency entry)
16-bit RGB/RGBA PNG         read at full 16-bit precision, ``/65535`` (Pillow itself keeps only the high byte;
                            see :func:`_read_png16_rgb`)
16-bit gray+alpha PNG       high byte only (Pillow limitation), ``/255``
``CMYK``, ``YCbCr``, other  converted by Pillow to RGB
==========================  =======================================================================
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "image_size",
    "list_images",
    "read_image",
    "read_image_uint8",
    "to_uint8",
    "write_image",
]

#: File extensions recognised as images by :func:`list_images` (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")

# Pillow's PNG plugin decodes 16-bit colour PNGs with these raw modes, which keep only the high byte of every sample.
# The matching little-endian raw modes (same 48/64 bits per pixel, so identical PNG unfiltering) pick the low byte.
_PNG16_LOW_BYTE_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files made by ``tempfile.mkstemp`` are 0600; written images get the usual ``0666 & ~umask`` instead.
_FILE_MODE = 0o666 & ~_read_umask()

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, Image.DecompressionBombError)


class ImageReadError(ValueError):
    """A file exists but cannot be decoded as an image (corrupt, truncated, unsupported mode)."""


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"cannot read image {path}: it is a directory, not an image file")


def _reraise(path: Path, err: BaseException) -> ImageReadError:
    cause = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return ImageReadError(f"cannot read image {path}: {cause}")


def _tile_rawmode(im: Image.Image) -> str | None:
    tile = getattr(im, "tile", None)
    if not tile or len(tile) != 1:
        return None
    args = tile[0].args if hasattr(tile[0], "args") else tile[0][3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _read_png16_rgb(path: Path, im: Image.Image, rawmode: str) -> np.ndarray:
    """Decode a 16-bit RGB(A) PNG at full precision; returns float32 ``(H, W, 3)`` in ``[0, 1]``.

    Pillow unpacks 48/64-bit PNG pixels with raw mode ``RGB;16B``/``RGBA;16B`` and keeps only the high byte. The PNG
    unfiltering (PNG spec §9) depends only on the bytes per pixel, which the little-endian raw modes ``RGB;16L``/
    ``RGBA;16L`` share, and those pick the *other* byte of every big-endian sample, i.e. the low byte. Decoding twice
    and combining ``256 * high + low`` therefore gives the exact 16-bit samples with Pillow's C decoder.
    """
    im.load()
    high = np.asarray(im, dtype=np.uint8)[..., :3].astype(np.uint16)
    with Image.open(path) as low_im:
        tile = low_im.tile[0]
        args = tile.args
        low_raw = _PNG16_LOW_BYTE_RAWMODE[rawmode]
        new_args = low_raw if isinstance(args, str) else (low_raw, *tuple(args)[1:])
        low_im.tile = [tile._replace(args=new_args)]
        low_im.load()
        low = np.asarray(low_im, dtype=np.uint8)[..., :3].astype(np.uint16)
    return ((high << 8) | low).astype(np.float32) / np.float32(65535.0)


def _pil_to_rgb_uint8(im: Image.Image) -> Image.Image:
    """Convert an 8-bit-per-sample Pillow image of any mode to ``RGB`` (alpha dropped, palette expanded)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        # A palette with a transparency entry goes through RGBA: converting it straight to RGB makes Pillow warn.
        return im.convert("RGBA").convert("RGB") if "transparency" in im.info else im.convert("RGB")
    if mode in ("PA", "La", "LA"):
        return im.convert("RGBA").convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")


def _decode_float(path: Path) -> np.ndarray:
    """Decode to float32 ``(H, W, 3)`` RGB in ``[0, 1]`` at the file's native precision."""
    with Image.open(path) as im:
        mode = im.mode
        if im.format == "PNG" and mode in ("RGB", "RGBA"):
            rawmode = _tile_rawmode(im)
            if rawmode in _PNG16_LOW_BYTE_RAWMODE:
                return _read_png16_rgb(path, im, rawmode)
        if mode.startswith("I;16"):
            arr = np.asarray(im).astype(np.float32) / np.float32(65535.0)
        elif mode == "I":
            arr = np.clip(np.asarray(im).astype(np.float32) / np.float32(65535.0), 0.0, 1.0)
        elif mode == "F":
            arr = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        else:
            return np.asarray(_pil_to_rgb_uint8(im), dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr


def _is_high_precision(im: Image.Image) -> bool:
    if im.mode.startswith("I") or im.mode == "F":
        return True
    return im.format == "PNG" and im.mode in ("RGB", "RGBA") and _tile_rawmode(im) in _PNG16_LOW_BYTE_RAWMODE


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a float32 ``(3, H, W)`` RGB tensor in ``[0, 1]`` (see the module docstring for modes).

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ImageReadError: the file cannot be decoded (truncated, not an image, unsupported mode); names file and cause.
    """
    path = Path(path)
    _check_file(path)
    try:
        arr = _decode_float(path)
    except (FileNotFoundError, PermissionError):
        raise
    except (*_DECODE_ERRORS, UnidentifiedImageError) as err:
        raise _reraise(path, err) from err
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_image_uint8(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` ``uint8`` RGB: the fast path of the training pipeline (and its cache).

    8-bit files are returned exactly as stored (same values as ``read_image(path) * 255``). Files with more than
    8 bits per sample (16-bit PNG/TIFF, ``I``/``F`` modes) are decoded at full precision by :func:`read_image` and
    rounded to the nearest 8-bit level, so training on them runs at 8-bit precision. The array may be read-only
    (it wraps Pillow's buffer without a copy); copy it before writing to it.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            if not _is_high_precision(im):
                rgb = _pil_to_rgb_uint8(im)
                return np.asarray(rgb, dtype=np.uint8)
        arr = _decode_float(path)
    except (FileNotFoundError, PermissionError):
        raise
    except (*_DECODE_ERRORS, UnidentifiedImageError) as err:
        raise _reraise(path, err) from err
    return to_uint8(arr)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(height, width)`` from the file header without decoding the pixels."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (FileNotFoundError, PermissionError):
        raise
    except (*_DECODE_ERRORS, UnidentifiedImageError) as err:
        raise _reraise(path, err) from err
    return int(height), int(width)


def to_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """Round a float image in ``[0, 1]`` to ``uint8``: ``clip(floor(255 x + 0.5), 0, 255)`` (MATLAB ``im2uint8``).

    Works on any shape; returns a numpy array of the same shape. ``uint8`` input is returned unchanged.
    """
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"to_uint8 expects a float image in [0, 1] or uint8, got dtype {arr.dtype}")
    scaled = np.floor(arr.astype(np.float64) * 255.0 + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _as_hwc_uint8(img: np.ndarray | torch.Tensor, path: Path) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(
                f"write_image({path}): tensor must be (3, H, W) or (1, H, W), got shape {tuple(img.shape)}"
            )
        if t.is_floating_point():
            t = t.float()
        arr = t.permute(1, 2, 0).numpy()
    elif isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3):
            raise ValueError(f"write_image({path}): array must be (H, W, 3) or (H, W), got shape {img.shape}")
    else:
        raise TypeError(f"write_image({path}): expected a torch.Tensor or numpy array, got {type(img).__name__}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"write_image({path}): empty image of shape {tuple(img.shape)}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"write_image({path}): image contains NaN or infinite values")
    try:
        out = to_uint8(arr)
    except ValueError as err:
        raise ValueError(f"write_image({path}): {err}") from None
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def write_image(
    path: str | os.PathLike[str],
    img: np.ndarray | torch.Tensor,
    *,
    compress_level: int = 6,
    quality: int = 95,
) -> Path:
    """Write an 8-bit RGB image atomically (temporary file in the same folder + ``os.replace``).

    Args:
        path: destination; the format follows the suffix (PNG for ``.png``; any Pillow format otherwise). Parent
            folders are created.
        img: a float tensor ``(3, H, W)`` (or ``(1, 3, H, W)``, ``(1, H, W)``) in ``[0, 1]``, or a numpy array
            ``(H, W, 3)``/``(H, W)``, float in ``[0, 1]`` or ``uint8``. Floats are rounded to the nearest level
            (:func:`to_uint8`), never truncated.
        compress_level: zlib level for PNG (0-9; 1 is much faster for large scratch files).
        quality: JPEG/WebP quality when writing those formats.

    Returns:
        The written path.
    """
    path = Path(path)
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"write_image({path}): unknown image file extension {path.suffix!r} (use .png)")
    arr = _as_hwc_uint8(img, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_kwargs: dict[str, int] = {}
    if fmt == "PNG":
        save_kwargs["compress_level"] = int(compress_level)
    elif fmt in ("JPEG", "WEBP"):
        save_kwargs["quality"] = int(quality)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(arr).save(handle, format=fmt, **save_kwargs)
        os.chmod(tmp_name, _FILE_MODE)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return path


def list_images(
    folder: str | os.PathLike[str],
    exts: Iterable[str] = IMAGE_EXTENSIONS,
    *,
    recursive: bool = False,
) -> list[Path]:
    """List the image files in ``folder`` sorted by path (hidden files, e.g. temporary ones, are skipped).

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a directory (message names it).
        ValueError: no file with one of ``exts`` is in it (message names the folder and the extensions).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "not found"
        raise FileNotFoundError(f"image folder {what}: {folder}")
    allowed = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts}
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in candidates if p.suffix.lower() in allowed and not p.name.startswith(".") and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(allowed))}) found in folder {folder}")
    return files
