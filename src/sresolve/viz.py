"""Side-by-side comparison figures: full images with a marked region on top, zoomed crops of that region below."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(path)
    return path
