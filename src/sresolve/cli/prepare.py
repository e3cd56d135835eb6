"""``sresolve-prepare``: offline dataset preparation (bicubic LR sets, training sub-images).

Subcommands:

``lr``
    The SR benchmark protocol for making LR images (BasicSR ``scripts/matlab_scripts/generate_bicubic_img.m``, RCAN /
    EDSR ``Prepare_TestData_HR_LR.m``): read the HR image as MATLAB ``im2double`` would (exact ``k / 255`` or
    ``k / 65535``), crop it from the top-left to a multiple of the scale (``modcrop``), resize it with MATLAB-exact
    bicubic :func:`sresolve.data.degradation.imresize` in float64, and write the 8-bit PNG with **rounding**
    (``floor(255 x + 0.5)``, MATLAB ``im2uint8``), never truncation (frameworks spec §2.1 step 8, §2.3). Files go to
    ``OUT/X{s}/{stem}x{s}.png`` (DIV2K naming, BasicSR ``filename_tmpl: '{}x{s}'``). With ``--hr-out`` the modcropped
    HR is written too (``GTmod12`` style) and every LR is made from that same crop, so pairs always line up.

``subimages``
    BasicSR ``scripts/data_preparation/extract_subimages.py`` layout for fast training IO: ``crop x crop`` tiles every
    ``step`` pixels, plus one tile flush with the bottom/right edge when the uncovered remainder exceeds ``thresh``.
    Tiles are named ``{stem}_s001.png`` … in row-major order; a trailing DIV2K scale suffix (``0001x4`` -> ``0001``) is
    removed from the stem (``--keep-suffix`` keeps it), so HR and LR tiles share names (``filename_tmpl: '{}'``).
    For a ×s LR folder use ``--crop 480/s --step 240/s`` to get tiles aligned with the HR ones.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from sresolve.data.degradation import imresize, modcrop
from sresolve.data.io import list_images, read_image, read_image_uint8, to_uint8, write_image
from sresolve.validation import check_int

__all__ = ["extract_subimages", "main", "make_lr", "read_image_exact", "subimage_starts"]

_T = TypeVar("_T")
_R = TypeVar("_R")
_SCALE_SUFFIX = re.compile(r"x\d+$")


def read_image_exact(path: str | Path) -> torch.Tensor:
    """Read an image as float64 ``(3, H, W)`` holding exactly MATLAB's ``im2double`` values.

    :func:`sresolve.data.io.read_image` returns float32, whose ``k / 255`` differs from the float64 ``k / 255``
    by up to 3e-8; the integer levels are recovered here (8-bit first, then 16-bit) so the float64 resize sees the
    same numbers MATLAB does. Files whose values are not on either grid (float TIFFs) are used as read.
    """
    x = read_image(path).to(torch.float64)
    # float32 error of k / L is <= 6e-8 relative, i.e. <= 1.6e-5 levels at L = 255 and <= 4e-3 levels at L = 65535;
    # off-grid values sit >= 1/257 of a level away (16-bit data on the 8-bit grid) or are genuinely continuous.
    for levels, tol in ((255.0, 1e-3), (65535.0, 5e-2)):
        k = torch.round(x * levels)
        if (x * levels - k).abs().max().item() < tol:
            return k / levels
    return x


def _run(fn: Callable[[_T], _R], items: Sequence[_T], workers: int, desc: str, unit: str, progress: bool) -> list[_R]:
    """Map ``fn`` over ``items`` (threads when ``workers > 1``) with a tqdm bar; the first error propagates."""
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
    results: list[_R] = []
    try:
        if workers <= 1:
            for item in items:
                results.append(fn(item))
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(fn, items):
                    results.append(result)
                    bar.update(1)
    finally:
        bar.close()
    return results


def _check_unique(names: Iterable[tuple[Path, str]], what: str) -> None:
    seen: dict[str, Path] = {}
    for path, name in names:
        if name in seen:
            raise ValueError(f"{what}: {seen[name]} and {path} would both be written as {name!r}")
        seen[name] = path


def make_lr(
    hr_dir: str | Path,
    out_dir: str | Path,
    scales: Sequence[int],
    *,
    modulo: int | None = None,
    hr_out: str | Path | None = None,
    filename_tmpl: str = "{}x{scale}",
    workers: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Write MATLAB-bicubic LR images of every HR image in ``hr_dir`` (see the module docstring for the protocol).

    Args:
        hr_dir: folder of HR images (not recursive).
        out_dir: LR images go to ``out_dir/X{s}/`` + ``filename_tmpl.format(stem, scale=s)`` + ``.png``.
        scales: integer downscale factors (>= 2).
        modulo: crop HR to a multiple of this before resizing (must be a multiple of every scale). Default: each
            scale crops to itself, or to ``lcm(scales)`` when ``hr_out`` is given.
        hr_out: if given, also write the modcropped HR as ``hr_out/{stem}.png``.
        filename_tmpl: LR stem template; ``{}`` is the HR stem, ``{scale}`` the factor.
        workers: images processed in parallel threads.
        progress: show a tqdm bar.

    Returns:
        The written files.
    """
    scales = _validate_scales(scales)
    if modulo is None and hr_out is not None:
        modulo = math.lcm(*scales)
    if modulo is not None:
        if modulo < 1:
            raise ValueError(f"--modcrop must be a positive integer, got {modulo}")
        bad = [s for s in scales if modulo % s]
        if bad:
            raise ValueError(f"--modcrop {modulo} is not a multiple of scale(s) {bad}: the LR would not tile the HR")
    if "{}" not in filename_tmpl:
        raise ValueError(f"--filename-tmpl must contain '{{}}' (the HR file stem), got {filename_tmpl!r}")
    try:
        filename_tmpl.format("probe", scale=scales[0])
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"--filename-tmpl {filename_tmpl!r} is not valid: use '{{}}' and '{{scale}}' only") from err

    files = list_images(hr_dir)
    _check_unique(((p, p.stem) for p in files), f"HR folder {hr_dir}")
    out_dir = Path(out_dir)
    for s in scales:
        (out_dir / f"X{s}").mkdir(parents=True, exist_ok=True)
    hr_out_dir = Path(hr_out) if hr_out is not None else None
    if hr_out_dir is not None:
        hr_out_dir.mkdir(parents=True, exist_ok=True)

    def process(path: Path) -> list[Path]:
        img = read_image_exact(path)
        written: list[Path] = []
        for s in scales:
            m = modulo or s
            h, w = img.shape[-2:]
            if h < m or w < m:
                raise ValueError(f"{path}: image of size {h}x{w} is smaller than the modcrop {m}")
            hr = modcrop(img, m)
            lr = imresize(hr, 1.0 / s)  # exact: hr is a multiple of s, so lr is (H / s, W / s)
            target = out_dir / f"X{s}" / f"{filename_tmpl.format(path.stem, scale=s)}.png"
            written.append(write_image(target, to_uint8(lr.permute(1, 2, 0))))
        if hr_out_dir is not None and modulo is not None:
            hr = modcrop(img, modulo)
            written.append(write_image(hr_out_dir / f"{path.stem}.png", to_uint8(hr.permute(1, 2, 0))))
        return written

    desc = f"bicubic LR x{','.join(map(str, scales))}"
    per_image = _run(process, files, workers, desc=desc, unit="img", progress=progress)
    return [p for group in per_image for p in group]


def _validate_scales(scales: Sequence[int]) -> list[int]:
    if not scales:
        raise ValueError("--scale needs at least one factor")
    out: list[int] = []
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 2:
            raise ValueError(f"--scale factors must be integers >= 2, got {s!r}")
        if int(s) not in out:
            out.append(int(s))
    return out


def subimage_starts(length: int, crop: int, step: int, thresh: int = 0) -> list[int]:
    """Top (or left) offsets of the sub-images along one axis, BasicSR ``extract_subimages`` rule.

    Offsets ``0, step, 2 step, …`` while the crop fits, plus ``length - crop`` when the uncovered remainder after the
    last regular crop is larger than ``thresh``. Empty when ``length < crop``.
    """
    if crop < 1 or step < 1 or thresh < 0:
        raise ValueError(f"need crop >= 1, step >= 1, thresh >= 0; got crop={crop}, step={step}, thresh={thresh}")
    if length < crop:
        return []
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def extract_subimages(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    crop: int = 480,
    step: int = 240,
    thresh: int = 0,
    strip_scale_suffix: bool = True,
    workers: int = 1,
    progress: bool = True,
    compress_level: int = 3,
) -> tuple[list[Path], list[Path]]:
    """Cut every image of ``src_dir`` into ``crop x crop`` tiles written as ``out_dir/{stem}_s{NNN}.png``.

    Pixels are copied losslessly from 8-bit sources (16-bit sources are rounded to 8 bits). Images smaller than
    ``crop`` in either dimension give no tile and are returned as skipped.

    Returns:
        ``(written, skipped)`` file lists.
    """
    if crop < 1 or step < 1 or thresh < 0:
        raise ValueError(f"need --crop >= 1, --step >= 1, --thresh >= 0; got {crop}, {step}, {thresh}")
    files = list_images(src_dir)

    def stem_of(path: Path) -> str:
        return _SCALE_SUFFIX.sub("", path.stem) if strip_scale_suffix else path.stem

    _check_unique(((p, stem_of(p)) for p in files), f"source folder {src_dir}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def process(path: Path) -> list[Path] | None:
        img = read_image_uint8(path)
        h, w = img.shape[:2]
        tops, lefts = subimage_starts(h, crop, step, thresh), subimage_starts(w, crop, step, thresh)
        if not tops or not lefts:
            return None
        written: list[Path] = []
        index = 0
        for top in tops:
            for left in lefts:
                index += 1
                tile = np.ascontiguousarray(img[top : top + crop, left : left + crop])
                target = out_dir / f"{stem_of(path)}_s{index:03d}.png"
                written.append(write_image(target, tile, compress_level=compress_level))
        return written

    results = _run(process, files, workers, desc=f"sub-images {crop}px", unit="img", progress=progress)
    written = [p for group in results if group is not None for p in group]
    skipped = [path for path, group in zip(files, results, strict=True) if group is None]
    return written, skipped


def _int_arg(minimum: int) -> Callable[[str], int]:
    """argparse ``type=`` for an int >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            return check_int(int(text), "value", minimum=minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None

    return parse


_positive_int, _non_negative_int = _int_arg(1), _int_arg(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sresolve-prepare",
        description="Prepare SR datasets: MATLAB-bicubic LR images and BasicSR-style training sub-images.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{lr,subimages}")

    lr = sub.add_parser(
        "lr",
        help="write MATLAB-bicubic LR images (rounded to 8 bits) for one or more scales",
        description="HR -> modcrop -> MATLAB imresize(bicubic) in float64 -> round to uint8 PNG, "
        "written to OUT/X{s}/{stem}x{s}.png.",
    )
    lr.add_argument("--hr", required=True, type=Path, help="folder of HR images")
    lr.add_argument("--out", required=True, type=Path, help="output root; LR images go to OUT/X{s}/")
    lr.add_argument("--scale", required=True, type=int, nargs="+", help="downscale factor(s), e.g. 2 3 4")
    lr.add_argument(
        "--modcrop",
        type=_positive_int,
        default=None,
        help="crop HR to a multiple of M first (a multiple of every scale; e.g. 12 for GTmod12). "
        "Default: each scale crops to itself, or lcm(scales) when --hr-out is given",
    )
    lr.add_argument("--hr-out", type=Path, default=None, help="also write the modcropped HR images here")
    lr.add_argument(
        "--filename-tmpl",
        default="{}x{scale}",
        help="LR file stem; {} = HR stem, {scale} = factor (default: {}x{scale})",
    )
    lr.add_argument("--workers", type=_positive_int, default=1, help="images processed in parallel (threads)")
    lr.add_argument("--quiet", action="store_true", help="no progress bar")

    si = sub.add_parser(
        "subimages",
        help="cut images into overlapping crops for fast training IO (BasicSR extract_subimages)",
        description="Writes OUT/{stem}_s001.png ... in row-major order; the last row/column of crops is flush with "
        "the bottom/right edge when the uncovered remainder exceeds --thresh.",
    )
    si.add_argument("--src", required=True, type=Path, help="folder of images to cut")
    si.add_argument("--out", required=True, type=Path, help="output folder")
    si.add_argument("--crop", type=_positive_int, default=480, help="crop size in pixels (default 480)")
    si.add_argument("--step", type=_positive_int, default=240, help="stride in pixels (default 240)")
    si.add_argument(
        "--thresh", type=_non_negative_int, default=0, help="add an edge-aligned crop if more than this many px remain"
    )
    si.add_argument(
        "--keep-suffix", action="store_true", help="keep a trailing 'x{s}' scale suffix in the stem (default: strip)"
    )
    si.add_argument("--workers", type=_positive_int, default=1, help="images processed in parallel (threads)")
    si.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sresolve-prepare``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "lr":
            written = make_lr(
                args.hr,
                args.out,
                args.scale,
                modulo=args.modcrop,
                hr_out=args.hr_out,
                filename_tmpl=args.filename_tmpl,
                workers=args.workers,
                progress=not args.quiet,
            )
            print(f"wrote {len(written)} images under {args.out}" + (f" and {args.hr_out}" if args.hr_out else ""))
        else:
            written, skipped = extract_subimages(
                args.src,
                args.out,
                crop=args.crop,
                step=args.step,
                thresh=args.thresh,
                strip_scale_suffix=not args.keep_suffix,
                workers=args.workers,
                progress=not args.quiet,
            )
            for path in skipped:
                print(f"sresolve-prepare: warning: {path} is smaller than --crop {args.crop}; skipped", file=sys.stderr)
            if not written:
                raise ValueError(f"no sub-images written: every image in {args.src} is smaller than --crop {args.crop}")
            print(f"wrote {len(written)} sub-images to {args.out}")
    except (OSError, ValueError) as err:  # FileNotFoundError, io.ImageReadError and argument errors name their cause
        print(f"sresolve-prepare: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
