"""``sresolve-test``: the benchmark table of a checkpoint (dataset x PSNR/SSIM), as markdown and CSV.

Arbitrary-scale models (EQSR) are evaluated at every scale of ``scales`` (LR formed by the EQSR protocol,
:mod:`sresolve.data.arbitrary`) and the table takes the layout of the EQSR supplement's Table 3: rows = scale ×
method with bicubic first, columns = data sets, out-of-distribution scales (> ×4) marked.

Examples::

    sresolve-test model=safmn scale=4 ckpt=SAFMN_DF2K_x4.pth data=benchmark
    sresolve-test model=safmn ckpt=outputs/train/safmn_x4_df2k/checkpoints/last.ckpt data=benchmark \
        'data.names=[Set5,Urban100]' save_images=true
    sresolve-test model=eqsr ckpt=EQSR.pth model.scale_code=cell 'scales=[2,2.25,3,3.25,4,4.25,5.25,6,8]'
    sresolve-test model=amrsr data=cufed5 ckpt=AMRSR.pth n_refs=4 'ref_counts=[1,2,4]' \
        'match_parts=[[1,1],[1,4],[1,16],[4,4],[16,16]]'

Perceptual metrics (lower is better; SAFMN supplement Table 5): ``lpips=true`` adds LPIPS (Zhang et al. 2018; RGB,
after the 8-bit rounding and shave; ``lpips_net=alex|vgg|squeeze``, backbone from the torch hub cache or
``lpips_backbone=<path>``), ``niqe=true niqe_model=<pristine model .npz/.mat>`` adds NIQE (Mittal et al. 2013) of the
SR output. A missing backbone or model file skips that metric with one log line; the run goes on::

    sresolve-test model=safmn ckpt=SAFMN_DF2K_x4.pth data=benchmark lpips=true niqe=true niqe_model=niqe_pris_params.npz

Reference-based models (AMRSR) are scored with the RefSR convention (Y channel, no border; ``crop_border=4`` gives
BasicSR's) on multi-reference data; ``ref_counts`` and ``match_parts`` add the reference-count and N_I/N_R tables
(PSNR, SSIM, time per image, peak memory).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from sresolve.config import ConfigError, conf_dir, split_model_cfg, to_dict

log = logging.getLogger("sresolve.test")


def run_test(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate and write ``results.md``/``results.csv``/``per_image.csv`` (+ images) into the run folder."""
    from sresolve import archs
    from sresolve.cli._common import describe, load_weights_into, pick_device
    from sresolve.data.io import write_image
    from sresolve.evaluation import evaluate
    from sresolve.metrics import EvalProtocol, perceptual_from_config
    from sresolve.viz import comparison_figure

    out_dir = Path(cfg.paths.output_dir)
    device = pick_device(str(cfg.device))
    arch, net_kwargs, _ = split_model_cfg(cfg.model)
    try:
        net = archs.create(arch, **net_kwargs)
    except FileNotFoundError:  # VGG-19 file absent: a saved AMRSR carries its matcher's VGG, loaded strictly below
        net = archs.create(arch, **{**net_kwargs, "vgg_weights": "random"})
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"model (arch={arch!r}): {err}") from None
    arbitrary = bool(getattr(net, "arbitrary_scale", False))
    refsr = bool(getattr(net, "needs_references", False))
    _check_reference_keys(cfg, arch, refsr)
    scales = to_dict(cfg.get("scales"))
    if scales is not None and not arbitrary:
        raise ConfigError(f"scales={scales}: model {arch!r} has a fixed x{net.scale} upsampler; use scale=")
    if not Path(str(cfg.ckpt)).is_file():
        raise ConfigError(f"ckpt={cfg.ckpt!r}: no such file")
    load_weights_into(net, cfg.ckpt, key=cfg.key)
    net = net.to(device).eval()
    try:
        datamodule = _datamodule(cfg, scales if arbitrary else None, n_refs=cfg.get("n_refs") if refsr else None)
        datamodule.setup("test")
        dls = datamodule.test_dataloader()
        dls = list(dls) if isinstance(dls, (list, tuple)) else [dls]
        loaders = dict(zip(datamodule.test_names, dls, strict=True))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data ({cfg.data.get('name', '?')}): {err}") from None
    per_scale = getattr(datamodule, "test_scale_of", None)
    if arbitrary and per_scale is None:
        raise ConfigError(
            f"model {arch!r} is arbitrary-scale: evaluate it with scales=[...] on data=benchmark or an arbitrary-"
            "scale data config (data=samples_arbitrary, ...)"
        )
    if cfg.crop_border == "ceil_scale" and not arbitrary:
        raise ConfigError("crop_border=ceil_scale is for arbitrary-scale models; give an int")
    if arbitrary:  # EQSR protocol: 4 px at every scale (choice E6)
        crop_border = 4 if cfg.crop_border is None else cfg.crop_border
    elif refsr:  # RefSR convention (TTSR/MASA on CUFED5; AMRSR choice C12): Y channel, no border
        crop_border = 0 if cfg.crop_border is None else int(cfg.crop_border)
    else:
        crop_border = int(cfg.crop_border) if cfg.crop_border is not None else int(net.scale)
    protocol = EvalProtocol(
        crop_border=4 if crop_border == "ceil_scale" else int(crop_border), y_channel=bool(cfg.y_channel)
    )
    try:  # a missing weights / model file only skips that metric (one log line); wrong values are errors
        perceptual = perceptual_from_config(cfg, device=device, logger=log)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    modcrop = getattr(datamodule, "modcrop", None)
    extra = (
        f"EQSR protocol: integer scales MATLAB bicubic, others floor(H/s) LR + round(h*s) HR crop; weights {cfg.ckpt}"
        if arbitrary
        else f"GT modcrop {modcrop if modcrop is not None else net.scale}; weights {cfg.ckpt}"
    )
    if refsr:
        extra += f"; {datamodule.eval_n_refs} reference(s) per image ({datamodule.degradation} bicubic LR)"

    def on_image(dataset: str, name: str, lr: Any, sr: Any, hr: Any, bic: Any) -> None:
        if cfg.save_images:
            write_image(out_dir / "images" / dataset / f"{name}.png", sr)
        if cfg.get("save_comparisons", False):
            panels = ([("bicubic", bic)] if bic is not None else []) + [(method, sr), ("ground truth", hr)]
            comparison_figure(panels, hr, out_dir / "comparisons" / dataset / f"{name}.png", crop_border=crop_border)

    tta = str(cfg.tta).lower() if cfg.tta is not None else "none"
    if tta not in ("none", "false", "x8"):
        raise ConfigError(f"tta={cfg.tta!r}: use tta=x8 (geometric self-ensemble) or leave it null")
    method = f"{arch}+" if tta == "x8" else arch  # the papers' "+" notation for self-ensemble (EDSR+, HAT+)
    extra += "; x8 self-ensemble" if tta == "x8" else ""
    log.info("evaluating %s on %s (%s)", describe(net), list(loaders), device)
    if crop_border == "ceil_scale":  # LIIF convention: shave ceil(s) px at scale s, one protocol per loader
        groups = [
            ({name: loader}, EvalProtocol(crop_border=math.ceil(per_scale[name]), y_channel=bool(cfg.y_channel)))
            for name, loader in loaders.items()
        ]
        extra += "; crop border ceil(scale) (LIIF convention)"
    else:
        groups = [(loaders, protocol)]
    results = []
    for group, group_protocol in groups:
        results += evaluate(
            net,
            group,
            group_protocol,
            method=method,
            bicubic_baseline=bool(cfg.bicubic_baseline),
            device=device,
            tile=cfg.tile,
            tile_overlap=int(cfg.tile_overlap),
            max_pixels=cfg.max_pixels,
            query_tile=cfg.get("query_tile"),
            tta=tta == "x8",
            on_image=on_image,
            dataset_names=getattr(datamodule, "test_set_of", None),
            perceptual=perceptual,
        )
    report = _report(results, out_dir, protocol, extra, net, modcrop, arbitrary, perceptual.describe())
    if refsr:
        report["studies"] = _reference_studies(cfg, net, datamodule, protocol, device, out_dir)
    return report


def _check_reference_keys(cfg: DictConfig, arch: str, refsr: bool) -> None:
    """``n_refs`` / ``ref_counts`` / ``match_parts`` belong to reference-based models and multi-reference data."""
    keys = [k for k in ("n_refs", "ref_counts", "match_parts") if cfg.get(k) is not None]
    if keys and not refsr:
        raise ConfigError(f"{keys[0]}= is for reference-based models (model=amrsr); {arch!r} takes no references")
    target = str(cfg.data.get("_target_", ""))
    if refsr and not target.endswith("MultiRefSRDataModule"):
        raise ConfigError(
            f"model {arch!r} needs reference images: use a multi-reference data config (data=cufed5, sun80, "
            f"samples_multiref, multiref_folder), not {cfg.data.get('name', target)!r}"
        )
    counts = to_dict(cfg.get("ref_counts"))
    if counts is not None and (
        not isinstance(counts, list) or not counts or not all(isinstance(n, int) and n >= 1 for n in counts)
    ):
        raise ConfigError(f"ref_counts={counts!r}: give a list of reference counts, e.g. '[1,2,4]'")
    parts = to_dict(cfg.get("match_parts"))
    if parts is not None and (
        not isinstance(parts, list)
        or not parts
        or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) for v in p) for p in parts)
    ):
        raise ConfigError(f"match_parts={parts!r}: give [N_I, N_R] pairs, e.g. '[[1,1],[1,4],[1,16],[4,4],[16,16]]'")


def _reference_studies(
    cfg: DictConfig, net: Any, datamodule: Any, protocol: Any, device: Any, out_dir: Path
) -> dict[str, Any]:
    """AMRSR's two studies in one command: ``ref_counts`` (supp. Table 3: PSNR/SSIM with 1, 2, 4 references) and
    ``match_parts`` (supp. Table 7: N_I / N_R against PSNR, peak memory and time per image); tables as markdown + CSV.
    """
    from sresolve.checkpoints import atomic_write_text
    from sresolve.evaluation import study_table, timed_evaluation

    def loaders() -> dict[str, Any]:
        dls = datamodule.test_dataloader()
        return dict(zip(datamodule.test_names, list(dls) if isinstance(dls, (list, tuple)) else [dls], strict=True))

    studies: dict[str, Any] = {}
    plan: list[tuple[str, str, list[dict[str, int]]]] = []
    if cfg.get("ref_counts") is not None:
        counts = [{"N_M": int(n)} for n in to_dict(cfg.ref_counts)]
        plan.append(("refs_table", "Number of references (AMRSR supp. Table 3)", counts))
    if cfg.get("match_parts") is not None:
        parts = [{"N_I": int(a), "N_R": int(b)} for a, b in to_dict(cfg.match_parts)]
        plan.append(("parts_table", "Part-based matching: N_I, N_R (AMRSR supp. Table 7)", parts))
    matcher = net.matcher
    base_parts, base_refs = (matcher.n_input_parts, matcher.n_ref_parts), datamodule.eval_n_refs
    for stem, title, settings in plan:
        rows = []
        for setting in settings:
            try:
                if "N_M" in setting:
                    datamodule.set_n_refs(setting["N_M"])
                else:
                    matcher.set_parts(setting["N_I"], setting["N_R"])
                rows += timed_evaluation(net, loaders(), protocol, setting, device=device)
            except ValueError as err:
                raise ConfigError(f"{stem} {setting}: {err}") from None
            finally:
                datamodule.set_n_refs(base_refs)
                matcher.set_parts(*base_parts)
        extra = (
            f"{base_refs} reference(s) per image"
            if stem == "parts_table"
            else f"N_I={base_parts[0]}, N_R={base_parts[1]}"
        )
        table = study_table(rows, title, protocol, extra, stem=stem)
        atomic_write_text(out_dir / f"{stem}.md", table.markdown() + "\n")
        table.write_csv(out_dir / f"{stem}.csv")
        print("\n" + table.markdown())
        studies[stem] = table
    return studies


def _datamodule(cfg: DictConfig, scales: list[float] | None, n_refs: int | None = None) -> Any:
    """The test datamodule; with ``scales`` (arbitrary-scale model) a fixed-scale benchmark config is swapped for the
    arbitrary-scale benchmark module on the same folders, and an arbitrary-scale config gets ``test_scales``."""
    from hydra.utils import instantiate

    data = to_dict(cfg.data)
    target = str(data.get("_target_", ""))
    if scales is not None:
        if target.endswith(".BenchmarkDataModule"):
            data = {
                "_target_": "sresolve.data.ArbitraryScaleBenchmarkDataModule",
                "root": data["root"],
                "names": data.get("names"),
                "num_workers": data.get("num_workers", 2),
                "name": "benchmark_arbitrary",
            }
        if "Arbitrary" not in str(data["_target_"]):
            raise ValueError(f"scales= needs data=benchmark or an arbitrary-scale data config, not {target}")
        data["test_scales"] = list(scales)
    if n_refs is not None:  # multi-reference data: references per test image
        data["n_refs"] = int(n_refs)
    return instantiate(data, _convert_="all")


def _report(
    results: list[Any],
    out_dir: Path,
    protocol: Any,
    extra: str,
    net: Any,
    modcrop: Any,
    arbitrary: bool,
    perceptual_note: str = "",
) -> dict[str, Any]:
    """Write results.md / results.csv / per_image.csv (+ scale_table.md for arbitrary scales) and print the table;
    ``perceptual_note`` (how LPIPS / NIQE were computed) joins the protocol line."""
    from sresolve.checkpoints import atomic_write_text
    from sresolve.evaluation import results_markdown, scale_table, write_results

    modcrop_used = int(modcrop) if modcrop is not None else int(net.scale)
    extra += f"; {perceptual_note}" if perceptual_note else ""
    paths = write_results(
        results,
        out_dir,
        protocol,
        extra,
        scale=None if arbitrary else int(net.scale),
        modcrop=None if arbitrary else modcrop_used,
        perceptual_note=perceptual_note,
    )
    if arbitrary:
        table = scale_table(results, protocol, extra)
        paths["scale_table"] = atomic_write_text(out_dir / "scale_table.md", table + "\n")
    else:
        table = results_markdown(results, protocol, extra)
    print("\n" + table)
    print(f"\nresults: {paths['markdown']} | {paths['csv']} | per image: {paths['per_image']}")
    return {"results": results, "paths": paths, "table": table}


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="test")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_test(cfg)
    except ConfigError as err:
        raise SystemExit(f"sresolve-test: error: {err}") from None


def main() -> None:
    """Console entry point (``sresolve-test``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
