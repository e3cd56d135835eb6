"""Side-by-side comparison figures: full images with a marked region on top, zoomed crops of that region below."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from sresolve.metrics import psnr_y


def _to_uint8(img: Tensor) -> np.ndarray:
    return img.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def most_detailed_region(hr: Tensor, size: int) -> tuple[int, int]:
    """Top-left of the ``size``² window with the largest gradient energy (where SR methods differ most)."""
    gray = hr.float().mean(0)
    energy = (gray[1:, :-1] - gray[:-1, :-1]).abs() + (gray[:-1, 1:] - gray[:-1, :-1]).abs()
    pooled = torch.nn.functional.avg_pool2d(energy[None, None], size, stride=max(size // 4, 1))[0, 0]
    idx = int(torch.argmax(pooled))
    stride = max(size // 4, 1)
    top, left = divmod(idx, pooled.shape[1])
    return top * stride, left * stride


def comparison_figure(
    panels: Sequence[tuple[str, Tensor]],
    reference: Tensor,
    path: str | Path,
    crop: int = 96,
    zoom: int = 3,
    crop_border: int = 0,
) -> Path:
    """Write a PNG: each panel (label, 3×H×W image) with its Y-PSNR vs ``reference`` in the caption, a red box on the
    most detailed region, and a ×``zoom`` nearest crop of that region underneath. The last panel is usually the GT."""
    h, w = reference.shape[-2:]
    crop = min(crop, h, w)
    top, left = most_detailed_region(reference, crop)
    tiles = []
    for label, img in panels:
        full = Image.fromarray(_to_uint8(img))
        draw = ImageDraw.Draw(full)
        draw.rectangle([left, top, left + crop - 1, top + crop - 1], outline=(255, 0, 0), width=max(1, w // 256))
        zoomed = full.crop((left, top, left + crop, top + crop)).resize((crop * zoom, crop * zoom), Image.NEAREST)
        if img is reference:
            caption = f"{label}"
        else:
            psnr = float(psnr_y(img[None], reference[None], crop_border)[0])
            caption = f"{label}  {psnr:.2f} dB"
        col_w = max(w, crop * zoom)
        col = Image.new("RGB", (col_w, 18 + h + crop * zoom + 4), (255, 255, 255))
        ImageDraw.Draw(col).text((4, 3), caption, fill=(0, 0, 0))
        col.paste(full, (0, 18))
        col.paste(zoomed, (0, 18 + h + 4))
        tiles.append(col)
    total_w = sum(t.width for t in tiles) + 4 * (len(tiles) - 1)
    sheet = Image.new("RGB", (total_w, max(t.height for t in tiles)), (255, 255, 255))
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + 4
    return save_png(sheet, path)


# ---------------------------------------------------------------- building blocks of the analysis figures (LAM, CKA)
def to_pil(img: Tensor | np.ndarray) -> Image.Image:
    """A PIL RGB image from a float ``(3, H, W)`` tensor in ``[0, 1]`` (clamped, rounded) or an ``(H, W, 3)`` uint8
    array."""
    if isinstance(img, Tensor):
        return Image.fromarray(_to_uint8(img))
    return Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))


def colormap(values: np.ndarray | Tensor, name: str = "seismic") -> np.ndarray:
    """``(H, W)`` values in ``[0, 1]`` -> ``(H, W, 3)`` uint8 through the matplotlib colormap ``name``."""
    from matplotlib import colormaps

    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    rgba = colormaps[name](np.clip(arr.astype(np.float64), 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def draw_box(
    img: Image.Image, box: tuple[int, int, int, int], color: tuple[int, int, int] = (255, 0, 0), width: int = 1
) -> Image.Image:
    """A copy of ``img`` with the outline of ``box = (top, left, height, width)`` (pixels) drawn on it."""
    top, left, height, bw = box
    out = img.copy()
    ImageDraw.Draw(out).rectangle([left, top, left + bw - 1, top + height - 1], outline=color, width=max(1, width))
    return out


def captioned(img: Image.Image, caption: str, height: int = 18) -> Image.Image:
    """``img`` under a white strip of ``height`` pixels holding ``caption`` (PIL's default font)."""
    tile = Image.new("RGB", (img.width, img.height + height), (255, 255, 255))
    ImageDraw.Draw(tile).text((4, 3), caption, fill=(0, 0, 0))
    tile.paste(img, (0, height))
    return tile


def grid(rows: Sequence[Sequence[Image.Image]], gap: int = 4) -> Image.Image:
    """Tiles laid out row by row on white, each row as tall as its tallest tile, columns as wide as their widest."""
    n_cols = max(len(r) for r in rows)
    col_w = [max(r[c].width for r in rows if c < len(r)) for c in range(n_cols)]
    row_h = [max(t.height for t in r) for r in rows]
    sheet = Image.new("RGB", (sum(col_w) + gap * (n_cols - 1), sum(row_h) + gap * (len(rows) - 1)), (255, 255, 255))
    y = 0
    for r, h in zip(rows, row_h, strict=True):
        x = 0
        for c, tile in enumerate(r):
            sheet.paste(tile, (x, y))
            x += col_w[c] + gap
        y += h + gap
    return sheet


def save_png(img: Image.Image, path: str | Path) -> Path:
    """Write ``img`` as PNG atomically (temporary file + rename; parent folders created)."""
    from sresolve.checkpoints import atomic_write

    return atomic_write(path, lambda f, _tmp: img.save(f, format="PNG"))


# ---------------------------------------------------------------- model comparisons and training curves (notebooks)
def detailed_regions(hr: Tensor, size: int, n: int = 2) -> list[tuple[int, int]]:
    """Top-left corners of ``n`` non-overlapping ``size``² windows with the largest gradient energy, best first
    (the windows where SR methods differ most; :func:`most_detailed_region` is the first)."""
    gray = hr.float().mean(0)
    energy = (gray[1:, :-1] - gray[:-1, :-1]).abs() + (gray[:-1, 1:] - gray[:-1, :-1]).abs()
    stride = max(size // 4, 1)
    pooled = torch.nn.functional.avg_pool2d(energy[None, None], size, stride=stride)[0, 0]
    out: list[tuple[int, int]] = []
    for idx in torch.argsort(pooled.flatten(), descending=True).tolist():
        top, left = (v * stride for v in divmod(idx, pooled.shape[1]))
        if all(abs(top - t) >= size or abs(left - lf) >= size for t, lf in out):
            out.append((top, left))
            if len(out) == n:
                break
    return out


@torch.no_grad()
def sr_panels(
    models: Mapping[str, nn.Module], hr: Tensor, scale: int, bicubic: bool = True
) -> tuple[list[tuple[str, Tensor]], Tensor]:
    """The panels of a visual comparison on one image: ``hr`` ``(3, H, W)`` is modcropped to ``scale``, its LR made
    with the MATLAB-exact bicubic (:func:`sresolve.data.degradation.imresize`), then ``[("bicubic", ...), (label,
    model output) for each model, ("HR", hr)]`` (clamped to [0, 1]) and the LR image."""
    from sresolve.data.degradation import imresize
    from sresolve.ops.tiling import upscale

    h, w = (s - s % scale for s in hr.shape[-2:])
    hr = hr[:, :h, :w].float()
    lr = imresize(hr[None], 1 / scale).clamp(0, 1)
    panels = [("bicubic", imresize(lr, float(scale)).clamp(0, 1)[0])] if bicubic else []
    for label, net in models.items():
        device = next(net.parameters()).device
        panels.append((label, upscale(net.eval(), lr.to(device))[0].cpu()))
    return [*panels, ("HR", hr)], lr[0]


def crop_comparison(
    panels: Sequence[tuple[str, Tensor]],
    reference: Tensor,
    boxes: Sequence[tuple[int, int]] | None = None,
    crop: int = 48,
    n_crops: int = 2,
    zoom: int = 3,
    thumb: int = 256,
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """A comparison sheet and the Y-PSNR of every panel on every crop.

    First row: the reference (last panel, usually HR) shrunk to ``thumb`` px wide with the crop boxes drawn; then one
    row per crop: each panel's ``crop``² region (top-left corners ``boxes``, default :func:`detailed_regions`)
    enlarged ×``zoom`` (nearest) and captioned with its PSNR against ``reference`` on that crop (8-bit, BT.601 Y, no
    border shaved; the protocol of :mod:`sresolve.metrics`). Returns the PIL image and ``[{"crop", "top", "left",
    "size", "panel", "psnr"}]`` (the reference panel itself is not scored).
    """
    h, w = reference.shape[-2:]
    crop = min(crop, h, w)
    boxes = list(boxes) if boxes is not None else detailed_regions(reference, crop, n_crops)
    colors = [(255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 160, 0), (200, 0, 200)]
    overview = to_pil(reference)
    for k, (top, left) in enumerate(boxes):
        overview = draw_box(overview, (top, left, crop, crop), colors[k % len(colors)], width=max(1, w // 200))
    ratio = min(1.0, thumb / w)
    overview = overview.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.BICUBIC)
    rows: list[list[Image.Image]] = []
    scores: list[dict[str, Any]] = []
    for k, (top, left) in enumerate(boxes):
        ref = reference[:, top : top + crop, left : left + crop]
        row = []
        for label, img in panels:
            region = img[:, top : top + crop, left : left + crop]
            tile = to_pil(region).resize((crop * zoom, crop * zoom), Image.NEAREST)
            tile = draw_box(tile, (0, 0, crop * zoom, crop * zoom), colors[k % len(colors)], width=2)
            if img is reference:
                row.append(captioned(tile, f"{label} (crop {k + 1})"))
                continue
            value = float(psnr_y(region[None].float(), ref[None].float(), 0)[0])
            scores.append({"crop": k + 1, "top": top, "left": left, "size": crop, "panel": label, "psnr": value})
            row.append(captioned(tile, f"{label}  {value:.2f} dB"))
        rows.append(row)
    return grid([[captioned(overview, "crops")], [grid(rows)]]), scores


def plot_training_curves(curves: Mapping[str, Sequence[tuple[int, float]]], title: str = "") -> Any:
    """A two-panel matplotlib Figure of a run's log (:func:`sresolve.results.training_curves`): the training losses
    (``train/*``, log scale) and the validation PSNR (``val/*psnr``) against the iteration. No pyplot state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_val = fig.subplots(1, 2)
    for key in sorted(k for k in curves if k.startswith("train/")):
        steps, values = zip(*curves[key], strict=True)
        ax_loss.plot(steps, values, label=key.removeprefix("train/"))
    ax_loss.set(xlabel="iteration", ylabel="training loss", yscale="log")
    val = sorted(k for k in curves if k.startswith("val/") and k.endswith("psnr"))
    per_set = [k for k in val if k.count("/") >= 2]  # val/psnr repeats the first set's curve
    for key in per_set or val:
        steps, values = zip(*curves[key], strict=True)
        ax_val.plot(steps, values, marker="o", label=key.removeprefix("val/"))
    ax_val.set(xlabel="iteration", ylabel="validation PSNR (dB)")
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
