"""AMRSR end to end: the GAN LightningModule (manual optimisation, warm-up, losses), a short training run on the
embedded stereo pair, the VGG-weights check at start, ``sresolve-test`` with the RefSR convention and the two study
tables, and loading a saved network back (spec archs_eqsr_amrsr.md B8, B9, B11, B12, C12)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from sresolve.config import ConfigError

TINY_NET = ["model.n_feats=16", "model.n_feat_blocks=2", "model.n_blocks=[2,1,1]", "model.vgg_weights=random"]
TINY_KW = {"n_feats": 16, "n_feat_blocks": 2, "n_blocks": [2, 1, 1], "vgg_weights": "random"}
TOTAL_ITER, WARMUP = 48, 24


@pytest.fixture(scope="module")
def multiref_data(tmp_path_factory: pytest.TempPathFactory, samples_root: Path) -> Path:
    """The embedded multi-reference set with small validation crops (96×192 HR) so that evaluation stays cheap."""
    from sresolve.data.multiref import materialize_multiref_samples

    materialize_multiref_samples(samples_root, val_size=(96, 192))
    return samples_root.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, multiref_data: Path) -> dict[str, object]:
    """A short GAN run of ``experiment=amrsr_samples`` at tiny size: 24 warm-up + 24 GAN iterations."""
    from conftest import compose_cfg
    from sresolve.cli.train import train

    out = tmp_path_factory.mktemp("amrsr") / "run"
    overrides = [
        "experiment=amrsr_samples",
        *TINY_NET,
        f"model.total_iter={TOTAL_ITER}",
        f"model.gan.warmup_iter={WARMUP}",
        "model.lr_patch_size=16",
        "model.batch_size=2",
        "model.optim.lr=5e-4",
        "model.sched.milestones=[1000]",
        f"val_freq={TOTAL_ITER}",
        f"save_freq={TOTAL_ITER}",
        "data.n_refs=2",
        "data.num_workers=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    cfg = compose_cfg("train", overrides, out, data_dir=multiref_data)
    metrics = train(cfg)
    return {"dir": out, "metrics": metrics, "cfg": cfg}


def _logged(run_dir: Path, key: str) -> list[float]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return [float(r[key]) for r in rows if r.get(key)]


def test_gan_training_phases_and_iteration_count(trained: dict[str, object]) -> None:
    """Warm-up = L1 only, then D (2 steps per G step) + all four losses; ``global_step`` counts G iterations only."""
    run_dir = Path(str(trained["dir"]))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == TOTAL_ITER  # the 2·24 discriminator updates did not advance it
    phase = _logged(run_dir, "train/gan_phase")
    assert phase[:WARMUP] == [0.0] * WARMUP and set(phase[WARMUP:]) == {1.0}
    assert len(_logged(run_dir, "train/l_adv")) == TOTAL_ITER - WARMUP
    assert len(_logged(run_dir, "train/l_tex")) == TOTAL_ITER - WARMUP
    assert len(_logged(run_dir, "train/d_loss")) > 0 and all(g > 0 for g in _logged(run_dir, "train/d_gp"))
    state = ckpt["state_dict"]
    assert any(k.startswith("discriminator.") for k in state)  # D is trained and checkpointed ...
    assert any(k.startswith("net.matcher.vgg.") for k in state)  # ... the matcher's VGG travels with the network ...
    assert not any("loss_vgg" in k or k.startswith("_perceptual") for k in state)  # ... the loss VGG does not
    assert len(ckpt["optimizer_states"]) == 2


def test_reconstruction_loss_falls(trained: dict[str, object]) -> None:
    rec = _logged(Path(str(trained["dir"])), "train/l_rec")
    assert len(rec) == TOTAL_ITER
    first, last = sum(rec[:8]) / 8, sum(rec[-8:]) / 8
    assert last < 0.7 * first, (first, last)


def test_references_help_on_the_stereo_pair(trained: dict[str, object], multiref_data: Path) -> None:
    """The trained model with the other stereo view as reference beats the same generator fed empty references."""
    from sresolve.checkpoints import load_model
    from sresolve.data.multiref import MultiRefEvalDataset, collate_multiref
    from sresolve.metrics import EvalProtocol

    net = load_model(Path(str(trained["dir"])) / "weights" / "net_g_latest.pth").eval()
    protocol = EvalProtocol(crop_border=0, y_channel=True)
    ds = MultiRefEvalDataset("samples", multiref_data / "samples", n_refs=1)
    with_refs, empty = [], []
    for i in range(len(ds)):
        batch = collate_multiref([ds[i]])
        with torch.no_grad():
            with_refs.append(float(protocol.score(net(batch["lr"], batch["refs"]), batch["hr"])["psnr"][0]))
            empty.append(float(protocol.score(net(batch["lr"]), batch["hr"])["psnr"][0]))
    assert sum(with_refs) / len(with_refs) > sum(empty) / len(empty) + 0.5, (with_refs, empty)


def test_sresolve_test_refsr_convention_and_study_tables(
    trained: dict[str, object], multiref_data: Path, tmp_path: Path
) -> None:
    """``sresolve-test model=amrsr data=samples_multiref n_refs=2 ref_counts=[1,2] match_parts=[[1,1],[1,4]]``."""
    from conftest import compose_cfg
    from sresolve.cli.test import run_test

    weights = Path(str(trained["dir"])) / "weights" / "net_g_latest.pth"
    overrides = ["model=amrsr", "data=samples_multiref", f"ckpt={weights}", "n_refs=2", "ref_counts=[1,2]"]
    overrides += ["match_parts=[[1,1],[1,4]]", *[o for o in TINY_NET if "vgg_weights" not in o]]
    cfg = compose_cfg("test", overrides, tmp_path / "test", data_dir=multiref_data)
    report = run_test(cfg)
    ours = next(r for r in report["results"] if r.method == "amrsr")
    assert len(ours.psnr) == 2 and "shave 0 px" in report["table"] and "2 reference(s)" in report["table"]
    refs_table, parts_table = report["studies"]["refs_table"], report["studies"]["parts_table"]
    assert refs_table.column("N_M") == [1, 2] and parts_table.column("N_R") == [1, 4]
    # the N_M = 2 row is the main evaluation again (same references, same network)
    assert refs_table.column("PSNR (dB)")[1] == pytest.approx(ours.mean_psnr, abs=1e-6)
    assert all(t > 0 for t in parts_table.column("Time / image (s)"))
    assert (tmp_path / "test" / "refs_table.md").is_file() and (tmp_path / "test" / "parts_table.csv").is_file()
    with pytest.raises(ConfigError, match="multi-reference data"):
        run_test(compose_cfg("test", [*overrides[:1], f"ckpt={weights}"], tmp_path / "t2", data_dir=multiref_data))
    with pytest.raises(ConfigError, match="reference-based"):
        run_test(compose_cfg("test", ["model=safmn", f"ckpt={weights}", "n_refs=2"], tmp_path / "t3"))


def test_training_stops_at_start_without_vgg_weights(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sresolve.cli.train import build_module

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    cfg = make_cfg("train", ["experiment=amrsr_samples"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"vgg19-dcbb9e9d\.pth.*empty_torch_home.*vgg_weights="):
        build_module(cfg)


def test_module_options_are_checked() -> None:
    from sresolve.models import RefSRGANModule

    kw = dict(optim={"lr": 1e-4}, sched={"name": "constant"}, total_iter=10, hr_patch_size=64)
    with pytest.raises(ValueError, match="unknown loss"):
        RefSRGANModule("amrsr", TINY_KW, loss={"l1": 1.0, "gram": 1.0}, **kw)
    with pytest.raises(ValueError, match=r"gan\.adversarial"):
        RefSRGANModule("amrsr", TINY_KW, loss={"l1": 1.0}, gan={"adversarial": "hinge"}, **kw)
    with pytest.raises(ValueError, match="reference-based"):
        RefSRGANModule("safmn", {"dim": 8, "n_blocks": 1}, loss={"l1": 1.0}, **kw)
    l2 = RefSRGANModule("amrsr", TINY_KW, loss={"l1": 1.0}, **kw)  # amrsr_l2: no discriminator, no loss VGG
    assert l2.discriminator is None and l2._loss_vgg is None and l2.crop_border == 0


def test_sresolve_upscale_with_references(trained: dict[str, object], multiref_data: Path, tmp_path: Path) -> None:
    from PIL import Image

    from conftest import compose_cfg
    from sresolve.cli.upscale import run_upscale

    weights = Path(str(trained["dir"])) / "weights" / "net_g_latest.pth"
    val = multiref_data / "samples" / "multiref" / "val" / "motorcycle_l2r"
    lr = tmp_path / "lr.png"
    Image.open(val / "hr.png").resize((48, 24), Image.BICUBIC).save(lr)
    args = [f"input={lr}", f"output={tmp_path / 'out'}", f"weights={weights}"]
    out = run_upscale(compose_cfg("infer", [*args, f"refs={val / 'refs'}"], tmp_path / "o1"))
    assert Image.open(out[0]).size == (192, 96)
    with pytest.raises(ConfigError, match="needs reference images"):
        run_upscale(compose_cfg("infer", args, tmp_path / "o2"))


def test_validation_matching_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """C13 option: with ``val.cache_matching`` an evaluation image is matched once; the output is unchanged."""
    from sresolve.models import RefSRGANModule

    module = RefSRGANModule(
        "amrsr", TINY_KW, optim={"lr": 1e-4}, sched={"name": "constant"}, loss={"l1": 1.0}, val={"cache_matching": True}
    ).eval()
    g = torch.Generator().manual_seed(0)
    batch = {"lr": torch.rand(1, 3, 8, 8, generator=g), "refs": [[torch.rand(3, 32, 40, generator=g)]]}
    batch |= {"name": ["a"], "ref_names": [["r"]]}
    calls = []
    original = module.net.match
    monkeypatch.setattr(module.net, "match", lambda *a, **k: calls.append(1) or original(*a, **k))
    outs = [module(batch["lr"], **module.eval_forward_kwargs(batch, 0)) for _ in range(3)]
    assert len(calls) == 1 and torch.equal(outs[0], outs[2])
    assert torch.allclose(outs[0], module.net(batch["lr"], batch["refs"]), atol=1e-6)


def test_amrsr_l2_trains_without_discriminator(multiref_data: Path, tmp_path: Path) -> None:
    """``model=amrsr_l2``: one optimizer (the generator), reconstruction loss only, no loss VGG."""
    from conftest import compose_cfg
    from sresolve.cli.train import train

    overrides = ["model=amrsr_l2", "data=samples_multiref", "trainer=cpu", *TINY_NET, "model.total_iter=3"]
    overrides += ["model.lr_patch_size=16", "model.batch_size=2", "data.n_refs=1", "data.num_workers=0"]
    overrides += ["val_freq=3", "save_freq=3", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
    metrics = train(compose_cfg("train", overrides, tmp_path / "run", data_dir=multiref_data))
    assert metrics["val/samples/psnr"] > 5.0
    logged = _logged(tmp_path / "run", "train/l_rec")
    assert len(logged) == 3 and not _logged(tmp_path / "run", "train/l_adv")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and len(ckpt["optimizer_states"]) == 1
