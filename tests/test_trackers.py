"""`train.report_to`: tracker names checked up front; TensorBoard, W&B (offline) and trackio (local) get
decpo's own metrics (`loss/decorr`, `decorr/value`, `probe/...`) beside TRL's, equal to metrics.jsonl."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from decpo.cli import main
from decpo.config import ConfigError, load_config
from decpo.training.checkpoints import config_changes

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_report_to_defaults_to_none_takes_a_name_or_a_list_and_refuses_unknown_names():
    assert load_config(SMOKE).train.report_to == ["none"]
    assert load_config(SMOKE, ["train.report_to=tensorboard"]).train.report_to == ["tensorboard"]
    cfg = load_config(SMOKE, ["train.report_to=[wandb, tensorboard]", "train.run_name=smoke"])
    assert cfg.train.report_to == ["wandb", "tensorboard"] and cfg.train.run_name == "smoke"
    assert load_config(SMOKE, ["train.report_to=all"]).train.report_to == ["all"]
    with pytest.raises(ConfigError, match="unknown tracker.*'tensorbord'.*did you mean 'tensorboard'") as e:
        load_config(SMOKE, ["train.report_to=[wandb, tensorbord]"])
    assert "valid: none, all, " in str(e.value) and "trackio" in str(e.value) and "mlflow" in str(e.value)
    with pytest.raises(ConfigError, match="stand alone"):
        load_config(SMOKE, ["train.report_to=[none, wandb]"])


def test_tracker_keys_may_change_on_resume():
    saved = load_config(SMOKE).to_dict()
    new = load_config(SMOKE, ["train.report_to=tensorboard", "train.run_name=x", "train.logging_dir=tb2"])
    assert config_changes(saved, new.to_dict()) == {}


def test_a_tracker_that_is_not_installed_stops_the_run_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from transformers.integrations import integration_utils

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(integration_utils, "is_tensorboard_available", lambda: False)
    monkeypatch.setattr("decpo.models.loading.load_model", no_model)
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(run), "train.report_to=tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "train.report_to=['tensorboard']" in err and "decpo[trackers]" in err and "Traceback" not in err


def test_tensorboard_events_hold_decpo_metrics_equal_to_metrics_jsonl(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # transformers' default folder would be ./runs
    run = tmp_path / "run"
    args = ["train.report_to=tensorboard", "probe.every_n_steps=2", "probe.num_texts=8"]
    assert main(["train", "--config", SMOKE, "--output-dir", str(run), *args]) == 0
    assert not (tmp_path / "runs").exists() and list((run / "tb").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    rows = read_metrics(run)
    # TensorBoard's names: `train/` before every non-eval key (the probes' too), as transformers writes them
    for key, tag in [
        ("train/loss/decorr", "train/loss/decorr"),
        ("train/decorr/value", "train/decorr/value"),
        ("train/loss/pref", "train/loss/pref"),
        ("eval/loss/decorr", "eval/loss/decorr"),
        ("probe/decorrelation/L01", "train/probe/decorrelation/L01"),
    ]:
        assert tag in tags, (tag, sorted(tags))
        logged = {r["step"]: r[key] for r in rows if key in r}
        written = {e.step: e.value for e in events.Scalars(tag)}
        assert logged and set(written) == set(logged), tag
        assert all(written[s] == pytest.approx(v, rel=1e-6) for s, v in logged.items()), tag


def run_cli(tmp_path, env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess:
    """`decpo train` on the smoke preset in a fresh process (the trackers' global state stays there); the
    user's $WANDB_DIR and $TRACKIO_DIR are not passed on."""
    kept = {k: v for k, v in os.environ.items() if k not in ("WANDB_DIR", "TRACKIO_DIR")}
    env = {**kept, "PYTHONPATH": str(REPO / "src"), **env}
    cmd = [
        sys.executable,
        "-m",
        "decpo.cli",
        "train",
        "--config",
        SMOKE,
        "--output-dir",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(
        [*cmd, *overrides], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_wandb_offline_writes_its_run_under_the_run_folder(tmp_path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    run_cli(tmp_path, env, "train.report_to=wandb", "train.run_name=smoke-wandb")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), runs
    assert not (tmp_path / "wandb").exists()  # not in the working directory


def test_trackio_local_database_holds_decpo_metrics(tmp_path):
    pytest.importorskip("trackio")
    run_cli(tmp_path, {"TRACKIO_DIR": str(tmp_path / "trackio")}, "train.report_to=trackio")
    (db,) = (tmp_path / "trackio").glob("*.db")
    with sqlite3.connect(db) as con:
        logged = [json.loads(m) for (m,) in con.execute("select metrics from metrics")]
    decorr = [m["train/loss/decorr"] for m in logged if "train/loss/decorr" in m]
    expected = [r["train/loss/decorr"] for r in read_metrics(tmp_path / "run") if "train/loss/decorr" in r]
    assert decorr == pytest.approx(expected, rel=1e-6)
