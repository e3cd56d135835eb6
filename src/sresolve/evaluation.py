"""Benchmark evaluation: per-image PSNR/SSIM under one :class:`~sresolve.metrics.EvalProtocol`, dataset means,
and the results table (markdown + CSV) with the protocol printed next to the numbers."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from sresolve.data.degradation import imresize
from sresolve.metrics import EvalProtocol
from sresolve.ops.tiling import upscale


@dataclass
class Result:
    """Mean PSNR/SSIM of one method on one data set, with the per-image values."""

    dataset: str
    method: str
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def mean_psnr(self) -> float:
        return sum(self.psnr) / len(self.psnr)

    @property
    def mean_ssim(self) -> float:
        return sum(self.ssim) / len(self.ssim)


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """The MATLAB-bicubic baseline row of every SR table."""
    return imresize(lr, float(scale)).clamp_(0.0, 1.0)


@torch.no_grad()
def evaluate(
    net: nn.Module | None,
    loaders: Mapping[str, Iterable[Mapping[str, Any]]],
    protocol: EvalProtocol,
    *,
    method: str = "model",
    bicubic_baseline: bool = True,
    device: torch.device | str = "cpu",
    tile: int | None = None,
    tile_overlap: int = 32,
    max_pixels: int | None = None,
    tta: bool = False,
    on_image: Callable[[str, str, Tensor, Tensor, Tensor, Tensor | None], None] | None = None,
) -> list[Result]:
    """Score ``net`` (and the bicubic baseline) on each data set; batches are ``{lr, hr, name}`` with batch size 1.

    ``on_image(dataset, name, lr, sr, hr, bicubic)`` is called per image (saving images, comparison figures).
    """
    results: list[Result] = []
    for dataset, loader in loaders.items():
        ours = Result(dataset, method)
        base = Result(dataset, "bicubic")
        for batch in tqdm(loader, desc=dataset, leave=False):
            lr, hr = batch["lr"].to(device), batch["hr"].to(device)
            names = batch.get("name") or [f"{len(ours.names) + i:04d}" for i in range(lr.shape[0])]
            scale = hr.shape[-1] // lr.shape[-1]
            sr = (
                upscale(net, lr, tile=tile, overlap=tile_overlap, max_pixels=max_pixels, tta=tta)
                if net is not None
                else None
            )
            bic = bicubic_upscale(lr, scale) if bicubic_baseline else None
            for result, out in ((ours, sr), (base, bic)):
                if out is None:
                    continue
                scores = protocol.score(out, hr)
                result.psnr += scores["psnr"].tolist()
                result.ssim += scores["ssim"].tolist()
                result.names += list(names)
            if on_image is not None:
                for i, name in enumerate(names):
                    on_image(
                        dataset,
                        str(name),
                        lr[i],
                        sr[i] if sr is not None else None,
                        hr[i],
                        bic[i] if bic is not None else None,
                    )
        if bicubic_baseline:
            results.append(base)
        if net is not None:
            results.append(ours)
    if not results or any(not r.psnr for r in results):
        empty = [r.dataset for r in results if not r.psnr] or list(loaders)
        raise ValueError(f"no images were evaluated for data set(s) {empty}")
    return results


def results_markdown(results: list[Result], protocol: EvalProtocol, extra: str = "") -> str:
    """A paper-style table: one row per (data set, method), PSNR (dB) / SSIM, with the protocol underneath."""
    lines = ["| dataset | method | images | PSNR (dB) | SSIM |", "|---|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.dataset} | {r.method} | {len(r.psnr)} | {r.mean_psnr:.4f} | {r.mean_ssim:.4f} |")
    lines.append("")
    lines.append(f"Protocol: {protocol.describe()}{'; ' + extra if extra else ''}")
    return "\n".join(lines)


def write_results(
    results: list[Result],
    out_dir: Path,
    protocol: EvalProtocol,
    extra: str = "",
    scale: float | None = None,
    modcrop: int | None = None,
) -> dict[str, Path]:
    """``results.md`` (table), ``results.csv`` (means; with ``scale`` / ``modcrop`` columns when given, read by
    ``sresolve-report``) and ``per_image.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "results.md"
    md.write_text(results_markdown(results, protocol, extra) + "\n")
    table = out_dir / "results.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        tail = [c for c, v in (("scale", scale), ("modcrop", modcrop)) if v is not None]
        w.writerow(["dataset", "method", "images", "psnr", "ssim", "protocol", *tail])
        values = [f"{v:g}" for v in (scale, modcrop) if v is not None]
        for r in results:
            w.writerow(
                [
                    r.dataset,
                    r.method,
                    len(r.psnr),
                    f"{r.mean_psnr:.6f}",
                    f"{r.mean_ssim:.6f}",
                    protocol.describe(),
                    *values,
                ]
            )
    per_image = out_dir / "per_image.csv"
    with per_image.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "image", "psnr", "ssim"])
        for r in results:
            for n, p, s in zip(r.names, r.psnr, r.ssim, strict=True):
                w.writerow([r.dataset, r.method, n, f"{p:.6f}", f"{s:.6f}"])
    return {"markdown": md, "csv": table, "per_image": per_image}
