"""``sresolve-upscale``: upscale an image or a folder with any weights file; variant and scale are inferred.

Large images are tiled with overlap blending (bounded memory); see :mod:`sresolve.ops.tiling`.

Examples::

    sresolve-upscale input=photos/ output=photos_x4/ weights=SAFMN_DF2K_x4.pth
    sresolve-upscale input=photo.png output=out/ weights=EQSR.pth scale=3.3 scale_code=cell   # arbitrary scale
    sresolve-upscale input=lr.png output=out/ weights=AMRSR.pth 'refs=[view2.png,view3.png]'  # reference-based
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from sresolve.config import ConfigError, conf_dir

log = logging.getLogger("sresolve.upscale")


def run_upscale(cfg: DictConfig) -> list[Path]:
    from sresolve.checkpoints import load_model
    from sresolve.cli._common import describe, pick_device
    from sresolve.data.io import list_images, read_image, write_image
    from sresolve.ops.tiling import auto_tile, num_tiles, upscale

    src, dst, weights = Path(str(cfg.input)), Path(str(cfg.output)), Path(str(cfg.weights))
    if not weights.is_file():
        raise ConfigError(f"weights={str(weights)!r}: no such file")
    if src.is_dir():
        files = list_images(src)
    elif src.is_file():
        files = [src]
    else:
        raise ConfigError(f"input={str(src)!r}: no such file or folder")
    device = pick_device(str(cfg.device))
    overrides: dict[str, Any] = {"scale_code": str(cfg.scale_code)} if cfg.get("scale_code") else {}
    scale = cfg.get("scale")
    head = int(scale) if scale is not None and float(scale).is_integer() else None  # of a multi-task pre-training file
    net = load_model(weights, key=cfg.key, head_scale=head, **overrides).to(device).eval()
    if scale is not None and not getattr(net, "arbitrary_scale", False) and float(scale) != float(net.scale):
        raise ConfigError(
            f"scale={scale}: {weights.name} is a fixed x{net.scale} network (use arbitrary-scale weights)"
        )
    refs = _reference_images(cfg, net, device)
    align = int(getattr(net, "tile_align", 8))
    log.info("%s from %s on %s", describe(net), weights, device)
    written = []
    for path in tqdm(files, desc="images", unit="img", disable=len(files) == 1):
        img = read_image(path)
        lr = img[None].to(device)
        h, w = lr.shape[-2:]
        tile = int(cfg.tile) if cfg.tile is not None else auto_tile(h, w, int(cfg.max_pixels), align)
        tiles = num_tiles(h, w, tile, min(int(cfg.tile_overlap), tile - align), align) if tile else 1
        total = (8 if cfg.tta else 1) * tiles
        if refs is not None:  # reference-based (AMRSR): the matching is part-based already, no tiling
            with torch.no_grad():
                sr = net(lr, [refs], names=[path.name]).cpu()
            write_image(dst / f"{path.stem}{cfg.suffix}.png", sr[0])
            written.append(dst / f"{path.stem}{cfg.suffix}.png")
            continue
        with tqdm(total=total, desc=path.name, unit="tile", leave=False, disable=total == 1) as bar, torch.no_grad():
            sr = upscale(
                net,
                lr,
                scale=float(scale) if scale is not None else None,
                query_tile=cfg.get("query_tile"),
                tile=tile,
                overlap=int(cfg.tile_overlap),
                out_device="cpu",
                progress=bar.update,
                tta=bool(cfg.tta),
            )
        out = dst / f"{path.stem}{cfg.suffix}.png"
        write_image(out, sr[0])
        written.append(out)
    print(f"wrote {len(written)} image(s) to {dst}")
    return written


def _reference_images(cfg: DictConfig, net: torch.nn.Module, device: torch.device) -> list[torch.Tensor] | None:
    """``refs=`` (files or one folder) for reference-based networks; an error when missing or not applicable."""
    from sresolve.config import to_dict
    from sresolve.data.io import list_images, read_image

    given = to_dict(cfg.get("refs"))
    if not getattr(net, "needs_references", False):
        if given:
            raise ConfigError(f"refs= is for reference-based weights (AMRSR); {type(net).__name__} takes none")
        return None
    if not given:
        raise ConfigError(f"{type(net).__name__} needs reference images: refs=[a.png,b.png] or refs=folder/")
    paths = [Path(str(p)) for p in (given if isinstance(given, list) else [given])]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"refs: {str(p)!r} is not an image file or folder")
    return [read_image(f).to(device) for f in files]


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="infer")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_upscale(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"sresolve-upscale: error: {err}") from None


def main() -> None:
    """Console entry point (``sresolve-upscale``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
