"""``make demo``: train SAFMN ×4 on the bundled photographs, evaluate it against bicubic on the held-out ones, write
a comparison figure, and say where everything is. Runs the real CLIs (``sresolve-train``, ``sresolve-test``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

RUN = "demo_safmn_x4"


def _run(args: list[str]) -> None:
    print("\n$ " + " ".join(["sresolve-" + args[0].rsplit(".", 1)[-1], *args[1:]]), flush=True)
    subprocess.run([sys.executable, "-m", *args], check=True)


def main() -> None:
    t0 = time.time()
    _run(["sresolve.cli.train", "experiment=demo", f"run_name={RUN}"])
    train_dir = Path("outputs/train") / RUN
    weights = train_dir / "weights" / "net_g_latest.pth"
    _run(
        [
            "sresolve.cli.test",
            "model=safmn",
            "scale=4",
            "data=samples_holdout",
            f"ckpt={weights}",
            "save_comparisons=true",
            "save_images=true",
            f"run_name={RUN}",
        ]
    )
    test_dir = Path("outputs/test") / RUN
    figures = sorted((test_dir / "comparisons").rglob("*.png"))
    print(f"""
Demo finished in {time.time() - t0:.0f} s.
  training run      {train_dir}/  (config.yaml, csv/metrics.csv, val_images/, checkpoints/last.ckpt, best.ckpt)
  weights           {weights}  (BasicSR layout) and {weights.with_suffix(".safetensors")}
  results table     {test_dir / "results.md"}  (+ results.csv, per_image.csv)
  comparisons       {", ".join(str(f) for f in figures)}
  SR images         {test_dir / "images"}/
Next: `.venv/bin/sresolve-upscale input=<image or folder> output=<folder> weights={weights}`""")


if __name__ == "__main__":
    main()
