"""Benchmark evaluation: per-image PSNR/SSIM under one :class:`~sresolve.metrics.EvalProtocol` (and optionally the
perceptual LPIPS / NIQE, :class:`~sresolve.metrics.PerceptualMetrics`), dataset means, and the results table
(markdown + CSV) with the protocol printed next to the numbers."""

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
from sresolve.metrics import EvalProtocol, PerceptualMetrics
from sresolve.metrics.perceptual import PERCEPTUAL_METRICS
from sresolve.ops.tiling import upscale


@dataclass
class Result:
    """Mean PSNR/SSIM of one method on one data set, with the per-image values; ``lpips`` / ``niqe`` per image when
    they were computed (empty otherwise)."""

    dataset: str
    method: str
    scale: float | None = None
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)
    niqe: list[float] = field(default_factory=list)

    @property
    def mean_psnr(self) -> float:
        return sum(self.psnr) / len(self.psnr)

    @property
    def mean_ssim(self) -> float:
        return sum(self.ssim) / len(self.ssim)

    @property
    def mean_lpips(self) -> float | None:
        """Mean LPIPS (lower is better), None when not computed."""
        return sum(self.lpips) / len(self.lpips) if self.lpips else None

    @property
    def mean_niqe(self) -> float | None:
        """Mean NIQE of the outputs (lower is better), None when not computed."""
        return sum(self.niqe) / len(self.niqe) if self.niqe else None


_TITLES = {"lpips": "LPIPS", "niqe": "NIQE"}


def _perceptual_in(results: Iterable[Result]) -> list[str]:
    """The perceptual metrics some result carries, in column order."""
    results = list(results)
    return [m for m in PERCEPTUAL_METRICS if any(getattr(r, m) for r in results)]


def bicubic_upscale(lr: Tensor, scale: float, size: tuple[int, int] | None = None) -> Tensor:
    """The MATLAB-bicubic baseline row of every SR table; ``size`` = the HR size (non-integer scales, where the HR is
    ``round(h·s) × round(w·s)`` rather than MATLAB's ``ceil``)."""
    out = imresize(lr, size=tuple(size)) if size is not None else imresize(lr, float(scale))
    return out.clamp_(0.0, 1.0)


def _batch_scale(batch: Mapping[str, Any], lr: Tensor, hr: Tensor) -> tuple[float, bool]:
    """``(scale, given)``: the batch's ``scale`` entry (arbitrary-scale sets) or the integer HR / LR ratio."""
    value = batch.get("scale")
    if value is None:
        return float(hr.shape[-1] // lr.shape[-1]), False
    return float(torch.as_tensor(value).reshape(-1)[0]), True


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
    query_tile: int | None = None,
    tta: bool = False,
    on_image: Callable[[str, str, Tensor, Tensor, Tensor, Tensor | None], None] | None = None,
    dataset_names: Mapping[str, str] | None = None,
    perceptual: PerceptualMetrics | None = None,
) -> list[Result]:
    """Score ``net`` (and the bicubic baseline) on each data set; batches are ``{lr, hr, name}`` with batch size 1.

    With ``perceptual`` the per-image LPIPS (RGB) and NIQE (SR output only) are computed too, after the protocol's
    8-bit rounding and shave (``protocol.quantize``, ``protocol.crop_border``).

    Batches with a ``scale`` entry (arbitrary-scale sets, :mod:`sresolve.data.arbitrary`) are upscaled by that scale
    (the network must be arbitrary-scale, or fixed at that scale) and their results carry it (:func:`scale_table`);
    ``dataset_names`` maps a loader key (``Set5_x2.5``) to the data set name shown (``Set5``).
    ``on_image(dataset, name, lr, sr, hr, bicubic)`` is called per image (saving images, comparison figures).
    """
    results: list[Result] = []
    for key, loader in loaders.items():
        dataset = (dataset_names or {}).get(key, key)
        ours = Result(dataset, method)
        base = Result(dataset, "bicubic")
        for batch in tqdm(loader, desc=key, leave=False):
            lr, hr = batch["lr"].to(device), batch["hr"].to(device)
            names = batch.get("name") or [f"{len(ours.names) + i:04d}" for i in range(lr.shape[0])]
            scale, given = _batch_scale(batch, lr, hr)
            if given:
                ours.scale = base.scale = scale
            if getattr(net, "needs_references", False):  # reference-based SR (AMRSR): the batch's references
                if "refs" not in batch:
                    raise ValueError(
                        f"{key}: {type(net).__name__} needs reference images; use a multi-reference data config "
                        "(data=cufed5, sun80, samples_multiref, multiref_folder)"
                    )
                refs = [[r.to(device) for r in rs] for rs in batch["refs"]]
                sr = net(lr, refs, names=list(names))  # type: ignore[misc]
            else:
                sr = (
                    upscale(
                        net,
                        lr,
                        scale=scale if given else None,
                        tile=tile,
                        overlap=tile_overlap,
                        max_pixels=max_pixels,
                        query_tile=query_tile,
                        tta=tta,
                    )
                    if net is not None
                    else None
                )
            if sr is not None and sr.shape != hr.shape:
                raise ValueError(f"{key}: SR output {tuple(sr.shape)} does not match HR {tuple(hr.shape)} ({names})")
            bic = bicubic_upscale(lr, scale, tuple(hr.shape[-2:]) if given else None) if bicubic_baseline else None
            for result, out in ((ours, sr), (base, bic)):
                if out is None:
                    continue
                scores = protocol.score(out, hr)
                result.psnr += scores["psnr"].tolist()
                result.ssim += scores["ssim"].tolist()
                result.names += list(names)
                if perceptual:
                    extra = perceptual.score(out, hr, protocol.crop_border, quantize_inputs=protocol.quantize)
                    for metric, values in extra.items():
                        getattr(result, metric).extend(values.tolist())
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
    """A paper-style table: one row per (data set, method), PSNR (dB) / SSIM (+ LPIPS / NIQE when computed, lower is
    better), with the protocol underneath."""
    per_scale = any(r.scale is not None for r in results)
    more = _perceptual_in(results)
    head, rule = ("| dataset | scale |", "|---|---:|") if per_scale else ("| dataset |", "|---|")
    titles = "".join(f" {_TITLES[m]} ↓ |" for m in more)
    lines = [
        head + " method | images | PSNR (dB) | SSIM |" + titles,
        rule + "---|---:|---:|---:|" + "---:|" * len(more),
    ]
    for r in results:
        sc = (f" ×{r.scale:g} |" if r.scale is not None else " |") if per_scale else ""
        cells = "".join(f" {_fmt(getattr(r, f'mean_{m}'))} |" for m in more)
        lines.append(f"| {r.dataset} |{sc} {r.method} | {len(r.psnr)} | {r.mean_psnr:.4f} | {r.mean_ssim:.4f} |{cells}")
    lines.append("")
    lines.append(f"Protocol: {protocol.describe()}{'; ' + extra if extra else ''}")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".4f", missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def scale_table(
    results: list[Result], protocol: EvalProtocol, extra: str = "", train_range: tuple[float, float] = (1.0, 4.0)
) -> str:
    """The arbitrary-scale table of the EQSR supplement (Table 3): rows = scale × method (bicubic first), a PSNR / SSIM
    column pair per data set (:func:`sresolve.results.benchmark_table`, the report tool's layout). Scales outside
    ``train_range`` (the scales seen in training, ×1–×4) are marked "(OOD)", out of distribution."""
    from sresolve.results import BenchmarkRecord, benchmark_table

    if not any(r.scale is not None for r in results):
        raise ValueError("scale_table: no result carries a scale (evaluate arbitrary-scale data sets)")
    records = [
        BenchmarkRecord(
            Path("."),
            "",
            r.dataset,
            r.method,
            r.scale,
            r.mean_psnr,
            r.mean_ssim,
            len(r.psnr),
            lpips=r.mean_lpips,
            niqe=r.mean_niqe,
        )
        for r in results
    ]
    table = benchmark_table(records)
    col = table.columns.index("Scale")
    for row, s in zip(table.rows, [r[col] for r in table.rows], strict=True):
        value = float(str(s).lstrip("×")) if s not in (None, "?") else None
        if value is not None and not train_range[0] <= value <= train_range[1]:
            row[col] = f"{s} (OOD)"
    table.title = table.title.replace("Benchmark results", "Arbitrary-scale results")  # (PSNR dB / SSIM [/ LPIPS ...])
    table.notes = [
        f"Protocol: {protocol.describe()}{'; ' + extra if extra else ''}",
        f"(OOD): out of distribution, outside the training scales ×{train_range[0]:g}–×{train_range[1]:g}.",
    ]
    return table.markdown()


def write_results(
    results: list[Result],
    out_dir: Path,
    protocol: EvalProtocol,
    extra: str = "",
    scale: float | None = None,
    modcrop: int | None = None,
    perceptual_note: str = "",
) -> dict[str, Path]:
    """``results.md`` (table), ``results.csv`` (means; ``lpips`` / ``niqe`` columns always, empty when not computed;
    with ``scale`` / ``modcrop`` columns when given; read by ``sresolve-report``) and ``per_image.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "results.md"
    md.write_text(results_markdown(results, protocol, extra) + "\n")
    table = out_dir / "results.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        scales = [r.scale if r.scale is not None else scale for r in results]
        tail = [c for c, on in (("scale", any(v is not None for v in scales)), ("modcrop", modcrop is not None)) if on]
        w.writerow(["dataset", "method", "images", "psnr", "ssim", *PERCEPTUAL_METRICS, "protocol", *tail])
        for r, sc in zip(results, scales, strict=True):
            values = {"scale": "" if sc is None else f"{sc:g}", "modcrop": f"{modcrop:g}" if modcrop else ""}
            w.writerow(
                [
                    r.dataset,
                    r.method,
                    len(r.psnr),
                    f"{r.mean_psnr:.6f}",
                    f"{r.mean_ssim:.6f}",
                    *(_fmt(getattr(r, f"mean_{m}"), ".6f", "") for m in PERCEPTUAL_METRICS),
                    protocol.describe() + (f"; {perceptual_note}" if perceptual_note else ""),
                    *(values[c] for c in tail),
                ]
            )
    per_image = out_dir / "per_image.csv"
    with per_image.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "scale", "image", "psnr", "ssim", *PERCEPTUAL_METRICS])
        for r in results:
            sc = r.scale if r.scale is not None else scale
            columns = [getattr(r, m) or [None] * len(r.names) for m in PERCEPTUAL_METRICS]
            for n, p, s, *more in zip(r.names, r.psnr, r.ssim, *columns, strict=True):
                w.writerow(
                    [
                        r.dataset,
                        r.method,
                        f"{sc:g}" if sc is not None else "",
                        n,
                        f"{p:.6f}",
                        f"{s:.6f}",
                        *(_fmt(v, ".6f", "") for v in more),
                    ]
                )
    return {"markdown": md, "csv": table, "per_image": per_image}


@dataclass
class StudyRow:
    """One setting of a study (e.g. ``{"N_M": 2}`` or ``{"N_I": 1, "N_R": 4}``) on one data set: quality, time and
    peak memory of the whole evaluation."""

    setting: dict[str, Any]
    dataset: str
    images: int
    psnr: float
    ssim: float
    seconds_per_image: float
    peak_mib: float
    memory_method: str


def timed_evaluation(
    net: nn.Module,
    loaders: Mapping[str, Iterable[Mapping[str, Any]]],
    protocol: EvalProtocol,
    setting: Mapping[str, Any],
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> list[StudyRow]:
    """:func:`evaluate` without the bicubic row, timed (wall clock per image, data loading included) and with the peak
    memory the run allocated above what was allocated before it (:func:`sresolve.analysis.complexity.
    peak_allocated_bytes`: CUDA caching-allocator peak; CPU allocator events through the profiler, which unlike the
    RSS high-water mark is not hidden by memory an earlier setting left mapped) — the columns of AMRSR's part-based
    trade-off table (spec B11). On the CPU the profiler's bookkeeping would inflate the time, so the memory comes from
    a second pass; on CUDA one pass gives both."""
    import time

    from sresolve.analysis.complexity import peak_allocated_bytes

    device = torch.device(device)
    results: list[Result] = []

    def run() -> None:
        results[:] = evaluate(net, loaders, protocol, bicubic_baseline=False, device=device, **kwargs)

    if device.type == "cuda":
        start = time.perf_counter()
        peak = peak_allocated_bytes(run, device)
        seconds = time.perf_counter() - start
    else:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        peak = peak_allocated_bytes(run, device)
    method = {"cuda": "CUDA max allocated", "cpu": "CPU allocator events"}.get(device.type, "not measured")
    peak_mib = float("nan") if peak is None else peak / 2**20
    n_total = sum(len(r.psnr) for r in results)
    return [
        StudyRow(dict(setting), r.dataset, len(r.psnr), r.mean_psnr, r.mean_ssim, seconds / n_total, peak_mib, method)
        for r in results
    ]


def study_table(rows: list[StudyRow], title: str, protocol: EvalProtocol, extra: str = "", stem: str = "study") -> Any:
    """Rows = settings × data sets; columns: the setting keys, data set, images, PSNR, SSIM, seconds per image and
    peak memory (:class:`sresolve.results.Table`, markdown + CSV like every report table)."""
    from sresolve.results import Table

    keys = list(rows[0].setting) if rows else []
    columns = [*keys, "Dataset", "Images", "PSNR (dB)", "SSIM", "Time / image (s)", "Peak memory (MiB)"]
    body = [
        [*(r.setting[k] for k in keys), r.dataset, r.images, r.psnr, r.ssim, r.seconds_per_image, r.peak_mib]
        for r in rows
    ]
    methods = sorted({r.memory_method for r in rows})
    notes = [
        f"Protocol: {protocol.describe()}{'; ' + extra if extra else ''}",
        f"Time: wall clock of the whole evaluation / images (data loading included). Memory: peak allocated during "
        f"the evaluation above what was allocated before it ({', '.join(methods)}).",
    ]
    return Table(title, columns, body, notes=notes, stem=stem, formats={"Time / image (s)": ".3f"})
