"""``sresolve-test``: the benchmark table of a checkpoint (dataset x PSNR/SSIM), as markdown and CSV.

Examples::

    sresolve-test model=safmn scale=4 ckpt=SAFMN_DF2K_x4.pth data=benchmark
    sresolve-test model=safmn ckpt=outputs/train/safmn_x4_df2k/checkpoints/last.ckpt data=benchmark \
        'data.names=[Set5,Urban100]' save_images=true
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from sresolve.config import ConfigError, conf_dir, split_model_cfg

log = logging.getLogger("sresolve.test")


def run_test(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate and write ``results.md``/``results.csv``/``per_image.csv`` (+ images) into the run folder."""
    from hydra.utils import instantiate

    from sresolve import archs
    from sresolve.cli._common import describe, load_weights_into, pick_device
    from sresolve.data.io import write_image
    from sresolve.evaluation import evaluate, results_markdown, write_results
    from sresolve.metrics import EvalProtocol
    from sresolve.viz import comparison_figure

    out_dir = Path(cfg.paths.output_dir)
    device = pick_device(str(cfg.device))
    arch, net_kwargs, _ = split_model_cfg(cfg.model)
    try:
        net = archs.create(arch, **net_kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"model (arch={arch!r}): {err}") from None
    if not Path(str(cfg.ckpt)).is_file():
        raise ConfigError(f"ckpt={cfg.ckpt!r}: no such file")
    load_weights_into(net, cfg.ckpt, key=cfg.key)
    net = net.to(device).eval()
    try:
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.setup("test")
        dls = datamodule.test_dataloader()
        dls = list(dls) if isinstance(dls, (list, tuple)) else [dls]
        loaders = dict(zip(datamodule.test_names, dls, strict=True))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data ({cfg.data.get('name', '?')}): {err}") from None
    crop_border = int(cfg.crop_border) if cfg.crop_border is not None else int(net.scale)
    protocol = EvalProtocol(crop_border=crop_border, y_channel=bool(cfg.y_channel))
    modcrop = getattr(datamodule, "modcrop", None)
    extra = f"GT modcrop {modcrop if modcrop is not None else net.scale}; weights {cfg.ckpt}"

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
    results = evaluate(
        net,
        loaders,
        protocol,
        method=method,
        bicubic_baseline=bool(cfg.bicubic_baseline),
        device=device,
        tile=cfg.tile,
        tile_overlap=int(cfg.tile_overlap),
        max_pixels=cfg.max_pixels,
        tta=tta == "x8",
        on_image=on_image,
    )
    modcrop_used = int(modcrop) if modcrop is not None else int(net.scale)
    paths = write_results(results, out_dir, protocol, extra, scale=int(net.scale), modcrop=modcrop_used)
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
