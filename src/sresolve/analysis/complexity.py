"""``sresolve-analyze complexity``: parameters, Multi-Adds, activations, peak memory and latency of SR networks.

Conventions (those of the papers' complexity tables):

* **Parameters**: trainable tensors (``net.parameters()``, the relative-position bias tables included, the int64
  index buffers and the ``mean`` buffer excluded), as in HAT's and SAFMN's tables.
* **Multi-Adds (MACs)**: multiply-accumulates of the convolutions, linear layers and attention products
  (``q·kᵀ`` and ``attn·v``) for **one image** at a fixed LR input size: 64×64 in the transformer papers (HAT, Chen et
  al., CVPR 2023, ×4: HAT 20.8M / 103.7G (its README: 102.4G), the SwinIR-like baseline of its CAB/OCAB ablation (α=0,
  no OCAB, window 16) 12.1M / 63.8G, HAT-S 9.6M / 54.9G), the size giving a 1280×720 output (320×180 at ×4) in the
  efficient-SR papers (SAFMN, Sun et al., ICCV 2023, ×4: 239.52K params, "13.56G FLOPs", which are MACs in fvcore's
  convention: one "flop" per multiply-add). Bias additions, normalisations, activation functions, softmax, pooling,
  interpolation, the attention scale / bias / mask additions and every other element-wise operation are **not**
  counted, as in those tables. Measured here: HAT 103.88G (+0.17 %), SwinIR-like 63.75G (-0.08 %), HAT-S 54.62G
  (-0.51 %), SAFMN 13.542G (-0.13 %; fvcore also counts SAFM's nearest upsampling, one per output element, +12.4M,
  which our inference path replaces by a copy); every parameter count matches. Window networks pad their input to
  a multiple of the window (HAT/HMA: 16, so 320×180 runs as 320×192): the count is that of the padded computation,
  which is what runs.
* **Activations**: the number of elements of the outputs of every convolution and linear layer (forward hooks on
  ``nn.Conv*d`` / ``nn.ConvTranspose*d`` / ``nn.Linear``), the convention of the NTIRE efficient-SR challenges'
  ``get_model_activation`` (and of fvcore's activation count for these layers).
* **Peak memory**: the memory allocated during one forward pass above what was allocated before it (weights and
  input excluded, the output included), under :func:`torch.inference_mode`. CUDA: ``torch.cuda.max_memory_allocated``
  of the caching allocator. CPU: the peak of the running sum of the allocator's allocation / free events recorded by
  :mod:`torch.profiler` (``profile_memory=True``); tracemalloc cannot see torch's allocations and the process RSS
  mixes in the allocator's caching and the Python heap. Kernel work buffers are included (they are allocations).
  Measured after the warm-up passes, so once-per-size caches kept by the network (HAT's shift mask) are left out.
* **Latency**: median wall time of ``N`` forward passes of one image after ``W`` warm-up passes, under
  :func:`torch.inference_mode`, synchronising CUDA around each pass.

Counting uses PyTorch's :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per multiply-add
(``mm``, ``addmm``, ``bmm``, ``convolution`` incl. grouped/depthwise ones, whose weight shape ``(Cout, Cin/groups,
k, k)`` gives the right count); :func:`count_macs` reports ``MACs = FLOPs / 2``. It is extended here
(:data:`FLOP_FORMULAS`, passed as ``custom_mapping``, torch's global registry is left alone) where it misses what
these networks run:

* :func:`torch.nn.functional.scaled_dot_product_attention` (HAT/HMA window and overlapping-window attention, HMA grid
  attention) is a composite op that the counter decomposes into the backend it picks. On CPU with a mask of the
  query's rank that is ``aten._scaled_dot_product_flash_attention_for_cpu``, a kernel torch has no formula for (the
  attention would count 0): it gets ``q·kᵀ`` + ``attn·v`` = ``B·heads·Lq·Lk·(d + d_v)`` MACs here. On meta tensors, or
  on CPU with a mask of another rank, SDPA takes the unfused math path (``_scaled_dot_product_attention_math``, itself
  composite) whose two batched matmuls torch counts as ``bmm``/``mm``: the same number. The CUDA kernels (flash,
  memory-efficient, cuDNN) have torch's own formula, again the same. Each SDPA call reaches exactly one of these
  paths, so it is counted once (tests compare CPU-fused, CPU-math and meta counts). Softmax, scale and the additive
  bias / mask are element-wise: not counted.
* ``aten.im2col`` / ``aten.col2im`` (``nn.Unfold`` / ``nn.Fold``, HAT's OCAB key/value windows): pure data
  movement, registered with 0 MACs so that they show in the per-operation breakdown; the OCAB attention over its
  ``Mo²`` keys is counted through the attention formula.

MACs and activations are counted on the ``meta`` device by default (shapes only: no memory, no arithmetic; a
full-size HAT at 64×64 takes about a second) through :func:`torch.func.functional_call` with meta copies of the
weights, so the network itself is not modified. Peak memory and latency need real passes on a real device.

Command line::

    sresolve-analyze complexity hat hat_s "SwinIR-like=hat,alpha=0,use_cab=false,use_ocab=false" safmn \\
        --scale 4 --size 64 --output-size 1280x720 --csv complexity.csv [--latency-runs 10] [--no-latency]

Sizes are written ``WIDTHxHEIGHT`` (or one number for a square); ``--size`` gives LR input sizes, ``--output-size``
HR output sizes (LR = output / scale, rounded up). One table row per model and size; the CSV has the same rows.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "CSV_COLUMNS",
    "FLOP_FORMULAS",
    "ComplexityResult",
    "MacReport",
    "SizeSpec",
    "attention_flops",
    "count_activations",
    "count_macs",
    "count_params",
    "main",
    "markdown_table",
    "measure_latency",
    "measure_model",
    "measure_peak_memory",
    "parse_size",
    "write_csv",
]

aten = torch.ops.aten

PROG = "sresolve-analyze complexity"


# ------------------------------------------------------------------------------------------------ counting formulas
def _prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def attention_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int]) -> int:
    """FLOPs (2 per MAC, torch's convention) of ``softmax(q·kᵀ)·v`` for ``q (..., Lq, d)``, ``k (..., Lk, d)``,
    ``v (..., Lk, d_v)``: ``2·B·Lq·Lk·(d + d_v)`` with ``B`` the product of the query's leading (batch, head) dims.

    Only the two matrix products are counted (the papers' convention); scale, bias/mask addition and softmax are
    element-wise. Key/value heads shared by several query heads (GQA) are counted once per query head, as computed.
    """
    *lead, lq, d = (int(s) for s in query_shape)
    lk = int(key_shape[-2])
    dv = int(value_shape[-1])
    return 2 * _prod(lead) * lq * lk * (d + dv)


def _sdpa_formula(query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any, **kwargs: Any) -> int:
    """Formula for the SDPA ops whose first three arguments are ``query, key, value`` (shapes)."""
    return attention_flops(query, key, value)


def _zero_formula(*args: Any, **kwargs: Any) -> int:
    """Data-movement ops (``im2col`` / ``col2im``): 0 MACs, listed for the breakdown."""
    return 0


def _sdpa_targets() -> list[Any]:
    """The fused SDPA kernels torch's counter has no formula for (those present in this torch build)."""
    names = (
        "_scaled_dot_product_flash_attention_for_cpu",  # CPU fused kernel, not counted by torch
        "_scaled_dot_product_fused_attention_overrideable",  # out-of-tree backends
    )
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


#: Extra formulas for :class:`~torch.utils.flop_counter.FlopCounterMode` (``custom_mapping``), in FLOPs (2 per MAC).
FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    **dict.fromkeys(_sdpa_targets(), _sdpa_formula),
    aten.im2col: _zero_formula,
    aten.col2im: _zero_formula,
}

_OP_KIND = {
    "convolution": "conv",
    "_convolution": "conv",
    "cudnn_convolution": "conv",
    "convolution_overrideable": "conv",
    "_slow_conv2d_forward": "conv",
    "mm": "matmul",
    "addmm": "matmul",
    "bmm": "matmul",
    "baddbmm": "matmul",
    "_scaled_mm": "matmul",
    "im2col": "unfold/fold",
    "col2im": "unfold/fold",
}


def _op_kind(packet: Any) -> str:
    """Readable operation class of an op packet: ``conv``, ``matmul``, ``attention``, ``unfold/fold`` or its name."""
    name = str(packet).split(".")[-1]
    if "attention" in name:
        return "attention"
    return _OP_KIND.get(name, name)


# ------------------------------------------------------------------------------------------------ MACs, activations
@dataclass
class MacReport:
    """MACs and activations of one forward pass (see the module docstring for the conventions).

    ``macs``: multiply-accumulates (= torch's FLOPs / 2); ``activations``: elements of all conv / linear outputs;
    ``by_module``: MACs per top-level child of the network, in registration order (``(root)``: ops run by the network's
    own ``forward`` outside its children, if any); ``by_op``: MACs per operation class: ``conv``, ``matmul`` (linear
    layers, and the attention products when SDPA runs unfused, as on the meta device), ``attention`` (fused SDPA
    kernels), ``unfold/fold``; ``device``: where the pass ran (``meta`` = shapes only).
    """

    macs: int
    activations: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    by_module: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    device: str = "meta"

    @property
    def flops(self) -> int:
        """FLOPs in torch's convention (2 per multiply-accumulate)."""
        return 2 * self.macs


def _input_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``(H, W)`` → ``(1, 3, H, W)``; ``(C, H, W)`` → ``(1, C, H, W)``; 4-D shapes as given."""
    dims = tuple(int(s) for s in shape)
    if len(dims) == 2:
        return (1, 3, *dims)
    if len(dims) == 3:
        return (1, *dims)
    if len(dims) == 4:
        return dims  # type: ignore[return-value]
    raise ValueError(f"input shape must be (H, W), (C, H, W) or (B, C, H, W), got {shape!r}")


def _meta_state(net: nn.Module) -> dict[str, Tensor]:
    """Meta copies of every parameter and buffer (tied / repeated names included) for ``functional_call``."""
    named = [*net.named_parameters(remove_duplicate=False), *net.named_buffers(remove_duplicate=False)]
    return {name: torch.empty_like(t, device="meta") for name, t in named}


def _module_totals(counts: dict[str, dict[Any, int]], net: nn.Module) -> dict[str, int]:
    """FLOPs per top-level child from the counter's per-module table (keys ``Root.child.sub...``).

    A child that is a container (``ModuleList``) never runs itself: its entries (``layers.0``, ``layers.1``...) are
    summed, each module counted once (the counter's entries include their sub-modules, so only the outermost entries
    of a child are added).
    """
    root = type(net).__name__
    rels = {k[len(root) + 1 :] for k in counts if k.startswith(root + ".")}
    totals = {name: 0 for name, _ in net.named_children()}
    for rel in rels:
        parts = rel.split(".")
        if any(".".join(parts[:i]) in rels for i in range(1, len(parts))):
            continue  # inside an outer entry already summed
        totals[parts[0]] = totals.get(parts[0], 0) + sum(counts[f"{root}.{rel}"].values())
    return totals


#: Layers whose outputs are counted as activations.
_ACTIVATION_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def count_macs(
    net: nn.Module,
    inputs: Tensor | Sequence[int],
    *,
    device: str | torch.device | None = "meta",
) -> MacReport:
    """Count the multiply-accumulates and activations of one forward pass of ``net`` (module docstring: conventions).

    Args:
        net: the network (not modified; its mode is used as is, normally ``eval()``).
        inputs: an input tensor, or a shape ``(H, W)`` / ``(C, H, W)`` / ``(B, C, H, W)`` (3 channels and batch 1 by
            default). MACs are those of the whole batch.
        device: ``"meta"`` (default): count on shapes only, with meta copies of the weights, through
            :func:`torch.func.functional_call` (a tensor input only gives its shape). Otherwise a real forward: a
            tensor input is used as is; a shape input becomes random values on ``device`` (``None``: where the
            weights are), where the network must already be.

    Returns:
        a :class:`MacReport`; ``report.macs`` = ``FlopCounterMode`` FLOPs / 2 with :data:`FLOP_FORMULAS` added.
    """
    on_meta = device is not None and torch.device(device).type == "meta"
    if isinstance(inputs, Tensor):
        x = torch.empty_like(inputs, device="meta") if on_meta else inputs
    else:
        shape = _input_shape(inputs)
        if on_meta:
            x = torch.empty(shape, device="meta")
        elif device is not None:
            x = torch.rand(shape, device=device)
        else:
            ref = next(iter(net.parameters()), None)
            x = torch.rand(shape, device=ref.device if ref is not None else "cpu")
    activations = 0

    def hook(_mod: nn.Module, _args: Any, out: Any) -> None:
        nonlocal activations
        if isinstance(out, Tensor):
            activations += out.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, _ACTIVATION_LAYERS)]
    counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
    try:
        with torch.inference_mode(), counter:
            y = functional_call(net, _meta_state(net), (x,)) if on_meta else net(x)
    finally:
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()
    by_op: dict[str, int] = {}
    for packet, flops in counts.get("Global", {}).items():
        kind = _op_kind(packet)
        by_op[kind] = by_op.get(kind, 0) + flops // 2
    total = counter.get_total_flops() // 2
    by_module = {k: v // 2 for k, v in _module_totals(counts, net).items()}
    rest = total - sum(by_module.values())
    if rest:
        by_module["(root)"] = rest
    out_shape = tuple(y.shape) if isinstance(y, Tensor) else ()
    return MacReport(
        macs=total,
        activations=activations,
        input_shape=tuple(x.shape),
        output_shape=out_shape,
        by_module=by_module,
        by_op=by_op,
        device=str(x.device),
    )


def count_activations(
    net: nn.Module, inputs: Tensor | Sequence[int], *, device: str | torch.device | None = "meta"
) -> int:
    """Elements of all conv / linear outputs in one forward pass (NTIRE efficient-SR convention; see
    :func:`count_macs`, which computes them in the same pass)."""
    return count_macs(net, inputs, device=device).activations


def count_params(net: nn.Module) -> int:
    """Number of parameters (shared ones once; buffers such as the relative-position indices excluded)."""
    return sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------------------------------------ memory and latency
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: kineto prints start/stop banners there (its log level is read only when
    torch is imported)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(run: Callable[[], Any]) -> int | None:
    """Peak of the running sum of the CPU allocator's allocation/free events (torch.profiler) during ``run()``;
    ``None`` if this torch build does not expose the events."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        run()
    finally:
        with _quiet_stderr():
            prof.stop()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]  # type: ignore[union-attr]
        events = [e for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
        events.sort(key=lambda e: e.start_ns())
        sizes = [int(e.nbytes()) for e in events]
    except (AttributeError, RuntimeError, TypeError):
        return None
    current = peak = 0
    for n in sizes:
        current += n
        peak = max(peak, current)
    return peak


def measure_peak_memory(net: nn.Module, x: Tensor) -> int | None:
    """Bytes allocated during one forward of ``x`` above those allocated before it (weights and input excluded, output
    included), under inference mode. CUDA: caching-allocator peak; CPU: profiler memory events; other devices: None.
    Run a warm-up pass first to leave out what a network allocates once per input size and keeps (HAT's shift mask).
    """

    def run() -> None:
        with torch.inference_mode():
            net(x)

    return peak_allocated_bytes(run, x.device)


def peak_allocated_bytes(run: Callable[[], Any], device: torch.device) -> int | None:
    """Peak bytes allocated on ``device`` while ``run()`` executes, above what was allocated before it. CUDA: the
    caching allocator's peak; CPU: the profiler's allocation/free events; other devices: None."""

    def synced() -> None:
        run()
        _sync(device)

    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        synced()
        return int(torch.cuda.max_memory_allocated(device) - base)
    if device.type == "cpu":
        return _cpu_peak_bytes(synced)
    return None


def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise OSError(f"{field} not found in /proc/self/status")


def peak_memory_meter(device: torch.device | None = None) -> tuple[Callable[[], float], str]:
    """Start measuring peak memory now; returns ``(growth_mib, method)`` where ``growth_mib()`` is the peak growth since
    this call in MiB. CUDA: ``max_memory_allocated`` after a reset; CPU: the kernel's RSS high-water mark (VmHWM) reset
    by writing 5 to ``/proc/self/clear_refs`` (so imports and model building do not hide the measured work), else
    ``ru_maxrss`` (less precise: it cannot be reset). Cheap enough to wrap a whole evaluation, unlike
    :func:`peak_allocated_bytes` (profiler events)."""
    import resource

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        return (lambda: (torch.cuda.max_memory_allocated(device) - base) / 2**20), "cuda_max_allocated"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_mib("VmRSS")
        return (lambda: _proc_status_mib("VmHWM") - before), "VmHWM"
    except OSError:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return (lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - start), "ru_maxrss"


def measure_latency(net: nn.Module, x: Tensor, runs: int = 10, warmup: int = 2) -> float:
    """Median seconds of ``runs`` forward passes of ``x`` after ``warmup`` untimed ones (inference mode, CUDA sync)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            _sync(x.device)
            t0 = time.perf_counter()
            net(x)
            _sync(x.device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class SizeSpec:
    """An analysis size: ``kind='lr'`` = the LR input size, ``kind='hr'`` = the HR output size (LR = HR / scale,
    rounded up: at ×3, 1280×720 → 427×240). Sizes are ``width × height``."""

    kind: Literal["lr", "hr"]
    width: int
    height: int

    def lr_hw(self, scale: int) -> tuple[int, int]:
        """``(height, width)`` of the LR input for a network of this ``scale``."""
        if self.kind == "lr":
            return self.height, self.width
        return math.ceil(self.height / scale), math.ceil(self.width / scale)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}" + (" (output)" if self.kind == "hr" else "")


def parse_size(text: str, kind: Literal["lr", "hr"] = "lr") -> SizeSpec:
    """``"64"`` (square) or ``"WIDTHxHEIGHT"`` (``"1280x720"``, ``×`` accepted) → :class:`SizeSpec`."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"size {text!r} is not N or WIDTHxHEIGHT with positive integers (e.g. 64, 1280x720)")
    return SizeSpec(kind, dims[0], dims[1])


# ------------------------------------------------------------------------------------------------ one model
@dataclass
class ComplexityResult:
    """One table row: a model at one input size. Memory in bytes and latency in seconds are ``None`` if skipped."""

    model: str
    scale: int
    params: int
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    macs: int
    activations: int
    peak_memory: int | None = None
    latency: float | None = None
    device: str = "cpu"
    by_module: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)


def measure_model(
    label: str,
    net: nn.Module,
    sizes: Sequence[SizeSpec],
    *,
    device: str | torch.device = "cpu",
    memory: bool = True,
    latency: bool = True,
    latency_runs: int = 10,
    warmup: int = 2,
) -> list[ComplexityResult]:
    """Parameters, MACs and activations (on the meta device), peak memory and latency (on ``device``) of ``net``
    at every size; ``net`` is moved to ``device`` only if memory or latency is measured. Per size: ``warmup`` untimed
    passes, one memory pass, ``latency_runs`` timed passes (median)."""
    device = torch.device(device)
    scale = int(getattr(net, "scale", 1))
    params = count_params(net)
    net = net.eval()
    if memory or latency:
        net = net.to(device)
    rows = []
    for size in sizes:
        h, w = size.lr_hw(scale)
        try:
            report = count_macs(net, (h, w), device="meta")
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on a real pass instead
            report = count_macs(net, torch.rand(1, 3, h, w, device=next(net.parameters()).device), device=None)
        row = ComplexityResult(
            model=label,
            scale=scale,
            params=params,
            input_hw=(h, w),
            output_hw=(int(report.output_shape[-2]), int(report.output_shape[-1])),
            macs=report.macs,
            activations=report.activations,
            device=str(device),
            by_module=report.by_module,
            by_op=report.by_op,
        )
        if memory or latency:
            x = torch.rand(1, 3, h, w, device=device)
            with torch.inference_mode():
                for _ in range(warmup):  # once-per-size caches (shift masks), allocator and kernel warm-up
                    net(x)
            if memory:
                row.peak_memory = measure_peak_memory(net, x)
            if latency:
                row.latency = measure_latency(net, x, runs=latency_runs, warmup=0)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ output
#: Columns of the CSV written by :func:`write_csv` (sizes width-first; memory in MiB, latency in ms, empty if skipped).
CSV_COLUMNS = (
    "model",
    "scale",
    "params",
    "input_w",
    "input_h",
    "output_w",
    "output_h",
    "macs",
    "activations",
    "peak_memory_mib",
    "latency_ms",
    "device",
)


def _si(n: float, units: Sequence[tuple[float, str]] = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))) -> str:
    for factor, suffix in units:
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}"
    return f"{n:g}"


def _csv_row(r: ComplexityResult) -> dict[str, Any]:
    return {
        "model": r.model,
        "scale": r.scale,
        "params": r.params,
        "input_w": r.input_hw[1],
        "input_h": r.input_hw[0],
        "output_w": r.output_hw[1],
        "output_h": r.output_hw[0],
        "macs": r.macs,
        "activations": r.activations,
        "peak_memory_mib": "" if r.peak_memory is None else f"{r.peak_memory / 2**20:.2f}",
        "latency_ms": "" if r.latency is None else f"{r.latency * 1e3:.3f}",
        "device": r.device,
    }


def write_csv(results: Sequence[ComplexityResult], path: str | Path) -> Path:
    """Write ``results`` with :data:`CSV_COLUMNS` (raw counts) to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in results)
    return path


def markdown_table(results: Sequence[ComplexityResult]) -> str:
    """A markdown table, one row per model and size (params/MACs/activations with K/M/G suffixes)."""
    header = ["model", "scale", "params", "input", "output", "MACs", "activations", "peak mem (MiB)", "latency (ms)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for r in results:
        cells = [
            r.model,
            f"×{r.scale}",
            _si(r.params),
            f"{r.input_hw[1]}×{r.input_hw[0]}",
            f"{r.output_hw[1]}×{r.output_hw[0]}",
            _si(r.macs),
            _si(r.activations),
            "–" if r.peak_memory is None else f"{r.peak_memory / 2**20:.1f}",
            "–" if r.latency is None else f"{r.latency * 1e3:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _breakdown_table(r: ComplexityResult) -> str:
    lines = [f"{r.model} at {r.input_hw[1]}×{r.input_hw[0]}: MACs per top-level module / per operation"]
    total = max(r.macs, 1)
    for name, macs in [*r.by_module.items(), *((f"[{k}]", v) for k, v in r.by_op.items())]:
        lines.append(f"  {name:<28} {_si(macs):>10} {100 * macs / total:6.1f}%")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Parameters, Multi-Adds (MACs), activations, peak memory and latency per image of SR networks.",
        epilog="Conventions: see the docstring of sresolve.analysis.complexity.",
    )
    p.add_argument(
        "models",
        nargs="+",
        help="model specs: a model config with overrides ('hat', 'safmn,dim=48'), a weights file, optionally "
        "'label=' first ('SwinIR-like=hat,alpha=0,use_cab=false,use_ocab=false')",
    )
    p.add_argument("--scale", type=int, default=4, help="scale of config specs (weights files keep theirs; default 4)")
    p.add_argument(
        "--size", nargs="+", action="extend", default=[], metavar="WxH", help="LR input size(s): 64 or WIDTHxHEIGHT"
    )
    p.add_argument(
        "--output-size",
        nargs="+",
        action="extend",
        default=[],
        metavar="WxH",
        help="HR output size(s), e.g. 1280x720 (LR = output / scale, rounded up)",
    )
    p.add_argument("--csv", type=Path, default=None, help="write the rows to this CSV file")
    p.add_argument("--device", default="cpu", help="device of the memory / latency passes: cpu, cuda[:N], auto")
    p.add_argument("--latency-runs", type=int, default=10, help="timed passes per size (median; default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes before timing (default 2)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency passes")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--breakdown", action="store_true", help="also print MACs per top-level module and operation")
    return p


def _error(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sresolve-analyze complexity``; returns the exit status (2 for bad arguments or specs)."""
    from sresolve.analysis.models import build_model
    from sresolve.cli._common import pick_device

    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    try:
        sizes = [parse_size(s, "lr") for s in args.size] + [parse_size(s, "hr") for s in args.output_size]
        if args.scale < 1:
            raise ValueError(f"--scale must be >= 1, got {args.scale}")
        if args.latency_runs < 1 or args.warmup < 0:
            raise ValueError("--latency-runs must be >= 1 and --warmup >= 0")
        device = pick_device(args.device)
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        nets = [build_model(spec, args.scale) for spec in args.models]  # every spec checked before any measurement
    except (ValueError, KeyError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        return _error(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    sizes = sizes or [SizeSpec("lr", 64, 64)]
    results: list[ComplexityResult] = []
    while nets:
        label, net = nets.pop(0)
        rows = measure_model(
            label,
            net,
            sizes,
            device=device,
            memory=not args.no_memory,
            latency=not args.no_latency,
            latency_runs=args.latency_runs,
            warmup=args.warmup,
        )
        results += rows
        del net
        if args.breakdown:
            print(_breakdown_table(rows[0]), end="\n\n")
    print(markdown_table(results))
    if args.csv is not None:
        print(f"\nwrote {write_csv(results, args.csv)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
