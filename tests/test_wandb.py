"""``logger=wandb`` offline: what a tiny real training run leaves in ``<run>/wandb/offline-run-*/`` (run config, git
commit, LR|SR|HR panel, ``results`` table), the credential / offline rule, config errors, rank-zero only."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from sresolve.config import ConfigError
from sresolve.loggers import (
    build_loggers,
    finish_wandb_runs,
    record_wandb_run,
    wandb_credentials_available,
    wandb_offline,
)
from sresolve.provenance import git_commit
from sresolve.results import results_table
from test_training_extras import TINY

SRC_DIR = Path(__file__).resolve().parents[1] / "src" / "sresolve"
NETRC_ENTRY = "machine {host}\n  login user\n  password {key}\n"


@pytest.fixture
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No credentials, wandb's own folders under ``tmp_path/home``, ``WANDB_MODE`` unset; returns that home."""
    home = tmp_path / "home"
    home.mkdir()
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    return home


def expected_git(path: Path) -> str | None:
    """``git rev-parse HEAD`` of ``path``, None outside a checkout (or without git)."""
    if shutil.which("git") is None:
        return None
    res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``run-<id>.wandb`` file: a 7-byte ``:W&B`` header, then LevelDB-log style 32 KiB
    blocks of chunks (crc32 uint32, length uint16, type uint8: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0:  # zero padding up to the end of the block
            pos += left - 7
            continue
        buf += data[pos : pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """The run record, the merged config, the merged summary and the record types of an offline run folder."""
    (store,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"run": None, "config": {}, "summary": {}, "types": []}
    for rec in wandb_records(store):
        kind = rec.WhichOneof("record_type")
        out["types"].append(kind)
        if kind == "run":
            out["run"] = rec.run
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                keys = list(item.nested_key) or [item.key]
                node = out["summary"]
                for k in keys[:-1]:
                    node = node.setdefault(k, {})
                node[keys[-1]] = json.loads(item.value_json)
    return out


def test_offline_training_run_records_config_git_panel_and_results_table(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, wandb_env: Path, samples_root: Path
) -> None:
    from sresolve.cli.train import train

    run = tmp_path / "run"
    overrides = [
        *TINY,
        "logger=wandb",
        "model.total_iter=2",
        "val_freq=2",
        "save_freq=2",
        "tags=[tiny,x4]",
        "logger.wandb.entity=my-team",
        "logger.wandb.group=sweep-a",
    ]
    cfg = make_cfg("train", overrides, run)
    metrics = train(cfg)
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"] == pytest.approx(metrics)

    # git commit: results.json and the wandb config agree with `git rev-parse HEAD` of the source tree
    sha = expected_git(SRC_DIR)
    git = results["git"]
    if sha is None:
        assert git is None
    else:
        assert git["sha"] == sha and len(sha) == 40 and isinstance(git["dirty"], bool)

    (run_dir,) = (run / "wandb").glob("offline-run-*")  # save_dir = the run folder (WANDB_DIR is elsewhere)
    rec = read_offline_run(run_dir)
    assert "exit" in rec["types"]  # the run was finished (results table logged before)
    assert rec["run"].project == "sresolve" and rec["run"].entity == "my-team"
    assert list(rec["run"].tags) == ["tiny", "x4"] and rec["run"].run_group == "sweep-a"
    assert rec["run"].job_type == "train" and rec["run"].display_name == "safmn_x4_samples"

    # the resolved run config without the hydra node, as the wandb config (+ git)
    config = rec["config"]
    run_cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    assert "hydra" not in config
    for key, value in run_cfg.items():
        assert config[key] == value, key
    assert config["model"]["arch"] == "safmn" and config["model"]["dim"] == 16 and config["scale"] == 4
    assert config["model"]["total_iter"] == 2 and config["tags"] == ["tiny", "x4"]
    assert config["git"] == git

    # the LR|SR|HR panel: three 192-px centre crops side by side; the HR third is the first val image's centre crop
    (png,) = (run_dir / "files" / "media" / "images" / "val").glob("comparison_*.png")
    panel = np.asarray(Image.open(png).convert("RGB")).astype(int)
    val_images = sorted((samples_root / "val" / "HR").glob("*.png"))
    crop = min(192, *(min(Image.open(p).size) for p in val_images))
    assert panel.shape == (crop, 3 * crop, 3)
    hr = np.asarray(Image.open(val_images[0]).convert("RGB")).astype(int)
    top, left = (hr.shape[0] - crop) // 2, (hr.shape[1] - crop) // 2
    assert np.abs(panel[:, 2 * crop :] - hr[top : top + crop, left : left + crop]).max() <= 1
    assert rec["summary"]["val/comparison"]["width"] == 3 * crop and rec["summary"]["val/comparison"]["height"] == crop

    # the results table: the rows of results.json, one per validation set
    summary_table = rec["summary"]["results"]
    assert summary_table["_type"] == "table-file" and summary_table["nrows"] == 1
    table = json.loads((run_dir / "files" / summary_table["path"]).read_text())
    assert table["columns"] == ["val_set", "psnr", "ssim"]
    m = results["metrics"]
    assert table["data"] == [["samples", pytest.approx(m["val/samples/psnr"]), pytest.approx(m["val/samples/ssim"])]]
    assert table["data"][0][1] == pytest.approx(m["val/psnr"])


def test_credentials_detection(wandb_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = wandb_env / ".netrc"
    assert not wandb_credentials_available()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_credentials_available()
    monkeypatch.setenv("WANDB_API_KEY", "  ")
    assert not wandb_credentials_available()
    monkeypatch.delenv("WANDB_API_KEY")
    netrc.write_text(NETRC_ENTRY.format(host="example.org", key="abc"))
    assert not wandb_credentials_available()  # another host
    netrc.write_text(NETRC_ENTRY.format(host="api.wandb.ai", key="abc"))
    assert wandb_credentials_available()
    assert not wandb_credentials_available(home=tmp_path)  # explicit home without a .netrc
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.mycorp.net")
    assert not wandb_credentials_available()  # a self-hosted server: its own host counts
    netrc.write_text(NETRC_ENTRY.format(host="wandb.mycorp.net", key="abc"))
    assert wandb_credentials_available()
    monkeypatch.delenv("WANDB_BASE_URL")
    other = tmp_path / "other_netrc"
    other.write_text(NETRC_ENTRY.format(host="api.wandb.ai", key="xyz"))
    monkeypatch.setenv("NETRC", str(other))
    assert wandb_credentials_available()
    other.write_text("machine api.wandb.ai login user password\n")  # malformed
    assert not wandb_credentials_available()
    assert wandb_credentials_available({"WANDB_API_KEY": "k"}) and not wandb_credentials_available({}, home=tmp_path)


@pytest.mark.parametrize(
    ("setting", "mode", "creds", "offline"),
    [
        (None, None, False, True),
        (None, None, True, False),
        ("auto", None, False, True),
        (None, "offline", True, True),
        (None, "dryrun", True, True),
        (None, "online", False, False),
        (None, "disabled", False, False),  # wandb itself then disables the run
        (True, None, True, True),
        (False, "offline", False, False),
    ],
)
def test_offline_rule(
    wandb_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: bool | str | None,
    mode: str | None,
    creds: bool,
    offline: bool,
) -> None:
    if mode is not None:
        monkeypatch.setenv("WANDB_MODE", mode)
    if creds:
        (wandb_env / ".netrc").write_text(NETRC_ENTRY.format(host="api.wandb.ai", key="abc"))
    assert wandb_offline(setting) is offline


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("logger.wandb.offline=maybe", "logger.wandb.offline"),
        ("logger.wandb.project=a/b", "logger.wandb.project"),
        ("logger.wandb.entity=''", "logger.wandb.entity"),
        ("tags=oops", "logger.wandb.tags"),
        ("logger.wandb.log_model=true", "logger.wandb.log_model"),
        ("logger.wandb._target_=sresolve.loggers.nope", "logger.wandb"),
    ],
)
def test_bad_wandb_config_names_the_key(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, wandb_env: Path, override: str, key: str
) -> None:
    cfg = make_cfg("train", [*TINY, "logger=wandb", override], tmp_path)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_loggers(cfg)


def test_default_wandb_logger_is_offline_without_credentials(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, wandb_env: Path
) -> None:
    from lightning.pytorch.loggers import WandbLogger

    cfg = make_cfg("train", [*TINY, "logger=wandb"], tmp_path)
    (lg,) = build_loggers(cfg)
    assert isinstance(lg, WandbLogger) and lg._offline
    assert lg._wandb_init["project"] == "sresolve" and lg._wandb_init["job_type"] == "train"
    assert "entity" not in lg._wandb_init and lg._wandb_init["dir"] == str(tmp_path)
    assert lg._experiment is None  # nothing started yet


def test_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    metrics = {"val/psnr": 30.0, "val/set5/psnr": 30.0, "val/set5/ssim": 0.9}
    for rank, calls in ((1, 0), (0, 1)):
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        lg = mock.MagicMock(spec=WandbLogger)
        lg._experiment = mock.MagicMock()
        record_wandb_run([lg], {"scale": 4}, git_commit())
        finish_wandb_runs([lg], metrics, step=7)
        assert lg.log_hyperparams.call_count == calls and lg.log_table.call_count == calls
    lg.log_hyperparams.assert_called_once_with({"scale": 4, "git": git_commit()})
    lg.log_table.assert_called_once_with(
        key="results", columns=["val_set", "psnr", "ssim"], data=[["set5", 30.0, 0.9]], step=7
    )
    lg._experiment.finish.assert_called_once_with()
    other = mock.MagicMock()  # not a wandb logger: untouched
    record_wandb_run([other], {"scale": 4}, git_commit())
    finish_wandb_runs([other], metrics)
    assert not other.method_calls


def test_results_table_columns_and_rows() -> None:
    metrics = {
        "val/psnr": 31.0,
        "val/set5/psnr": 31.0,
        "val/set5/ssim": 0.9,
        "val/set5/lpips": 0.1,
        "val/urban100/ssim": 0.8,
        "val/urban100/psnr": 27.5,
        "train/loss": 1.0,
    }
    columns, rows = results_table(metrics)
    assert columns == ["val_set", "psnr", "ssim", "lpips"]
    assert rows == [["set5", 31.0, 0.9, 0.1], ["urban100", 27.5, 0.8, None]]
    assert results_table({"val/psnr": 1.0}) == (["val_set"], [])


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = expected_git(SRC_DIR)
    got = git_commit()
    assert (got is None) if sha is None else (got is not None and got["sha"] == sha)
    assert git_commit(tmp_path / "missing") is None
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # tmp_path is not inside another checkout
    assert git_commit(repo) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "a.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], cwd=repo, check=True)
    head = expected_git(repo)
    assert head is not None and git_commit(repo) == {"sha": head, "dirty": False}
    (repo / "a.txt").write_text("b\n")
    assert git_commit(repo) == {"sha": head, "dirty": True}
    monkeypatch.setenv("PATH", str(tmp_path / "no_bin"))  # no git at all: None, no exception
    assert git_commit(repo) is None
