"""The embedded sample data set: colour photographs that ship inside the scikit-image wheel (no download).

It exists so that every pipeline (training, validation, tests, notebooks) runs out of the box on any machine. It is
far too small to train a useful model; use DIV2K/DF2K for that.

Split (fixed; the validation images never appear in the training folder):

* ``train`` (8): ``rocket`` 427×640, ``motorcycle_left`` and ``motorcycle_right`` 500×741 (the two views of the
  Middlebury stereo pair), ``hubble_deep_field`` 872×1000, ``immunohistochemistry`` 512×512, ``retina`` (the central
  960×960 square inside the fundus disc, so no black border), ``colorwheel`` 370×371, ``logo`` 500×500 (RGBA in
  scikit-image; alpha dropped, it is fully opaque).
* ``val`` (3): ``astronaut`` 512×512, ``chelsea`` 300×451, ``coffee`` 400×600 — natural photographs with faces,
  fur and texture, the closest to Set5/Set14 content.

:func:`materialize_samples` writes them as PNGs into ``<root>/train/HR`` and ``<root>/val/HR`` (about 1-2 s once,
then a few milliseconds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sresolve.data.io import image_size, write_image

__all__ = ["SAMPLE_SPLIT", "load_sample", "materialize_samples", "sample_names"]

#: Fixed train/val split of the embedded images (names of :func:`load_sample`).
SAMPLE_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "rocket",
        "motorcycle_left",
        "motorcycle_right",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "colorwheel",
        "logo",
    ),
    "val": ("astronaut", "chelsea", "coffee"),
}

_MANIFEST = "sresolve_samples.json"
_MANIFEST_VERSION = 1
# Central square of the retina image that lies entirely inside the fundus disc (centre ~(702, 704), radius ~697).
_RETINA_BOX = (222, 1182, 224, 1184)


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        if name in ("motorcycle_left", "motorcycle_right"):
            left, right, _ = skimage.data.stereo_motorcycle()
            return left if name == "motorcycle_left" else right
        img = getattr(skimage.data, name)()
        if name == "retina":
            top, bottom, left, right = _RETINA_BOX
            img = img[top:bottom, left:right]
        return img

    return load


_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    name: _skimage_loader(name) for names in SAMPLE_SPLIT.values() for name in names
}


def sample_names(split: str | None = None) -> list[str]:
    """Names of the sample images, of one split (``"train"``/``"val"``) or all."""
    if split is None:
        return [n for names in SAMPLE_SPLIT.values() for n in names]
    if split not in SAMPLE_SPLIT:
        raise ValueError(f"unknown sample split {split!r}; expected one of {sorted(SAMPLE_SPLIT)}")
    return list(SAMPLE_SPLIT[split])


def load_sample(name: str) -> np.ndarray:
    """Return one embedded image as ``(H, W, 3)`` ``uint8`` RGB (alpha dropped)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown sample image {name!r}; expected one of {sample_names()}")
    img = np.asarray(_LOADERS[name]())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.dtype != np.uint8:
        raise ValueError(f"sample image {name!r} has dtype {img.dtype}, expected uint8")
    return np.ascontiguousarray(img[:, :, :3])


def _split_dirs(root: Path) -> dict[str, Path]:
    return {split: root / split / "HR" for split in SAMPLE_SPLIT}


def _is_complete(root: Path, files: dict[str, dict[str, list[int]]]) -> bool:
    """True when every recorded file exists with its recorded ``[height, width]``."""
    for split, dirs in _split_dirs(root).items():
        for name in SAMPLE_SPLIT[split]:
            path = dirs / f"{name}.png"
            shape = files.get(split, {}).get(name)
            if shape is None or not path.is_file():
                return False
            try:
                if list(image_size(path)) != list(shape):
                    return False
            except (OSError, ValueError):
                return False
    return True


def materialize_samples(root: str | os.PathLike[str], *, compress_level: int = 3) -> dict[str, Path]:
    """Write the embedded images as PNGs under ``root`` once and return the HR folders.

    Layout: ``<root>/train/HR/<name>.png`` and ``<root>/val/HR/<name>.png`` (names in :data:`SAMPLE_SPLIT`), plus a
    manifest ``<root>/sresolve_samples.json`` written last. A call finds the set complete (manifest present, every
    file there with the recorded size) and returns at once; otherwise it (re)writes every file. Each PNG is written
    atomically, so concurrent calls (e.g. several DDP ranks) are safe and never leave partial files.

    Returns:
        ``{"train": <root>/train/HR, "val": <root>/val/HR}``.
    """
    root = Path(root)
    dirs = _split_dirs(root)
    manifest_path = root / _MANIFEST
    if manifest_path.is_file():
        try:
            recorded = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict) and recorded.get("version") == _MANIFEST_VERSION:
            expected_names = {split: sorted(names) for split, names in SAMPLE_SPLIT.items()}
            files = recorded.get("files")
            if (
                isinstance(files, dict)
                and {s: sorted(v) for s, v in files.items() if isinstance(v, dict)} == expected_names
                and _is_complete(root, files)
            ):
                return dirs

    files_record: dict[str, dict[str, list[int]]] = {}
    for split, names in SAMPLE_SPLIT.items():
        files_record[split] = {}
        for name in names:
            img = load_sample(name)
            write_image(dirs[split] / f"{name}.png", img, compress_level=compress_level)
            files_record[split][name] = [int(img.shape[0]), int(img.shape[1])]
    tmp = root / f".{_MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"version": _MANIFEST_VERSION, "files": files_record}, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    return dirs
