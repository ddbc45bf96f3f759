"""`decpo.integrity`: folder manifests catch a missing, truncated or changed file; append-only JSONL logs drop a
torn last line and name a damaged middle one."""

import json
import logging

import pytest

from decpo.integrity import MANIFEST, DamagedLogError, manifest_problem, read_jsonl_log, write_manifest


def test_a_manifest_names_the_file_that_changed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"\x00\x01" * 100)
    (tmp_path / "sub" / "b.json").write_text('{"x": 1}')
    assert manifest_problem(tmp_path) == f"no {MANIFEST} (interrupted while saving)"
    write_manifest(tmp_path)
    assert manifest_problem(tmp_path) is None
    (tmp_path / "stray.txt").write_text("not listed, not checked")
    assert manifest_problem(tmp_path) is None
    (tmp_path / "a.bin").write_bytes(b"\x00\x01" * 99 + b"\x00\x03")  # one bit, same size
    assert "a.bin does not match its sha256" in manifest_problem(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"\x00")
    assert "a.bin has 1 bytes, its manifest says 200" in manifest_problem(tmp_path)
    (tmp_path / "a.bin").unlink()
    assert manifest_problem(tmp_path) == "a.bin is missing"
    (tmp_path / MANIFEST).write_text('{"files": ')
    assert f"{MANIFEST} is unreadable" in manifest_problem(tmp_path)


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 1}) + "\n\n" + json.dumps({"step": 2}) + '\n{"step": 3, "lo')
    with caplog.at_level(logging.WARNING):
        assert read_jsonl_log(log) == [{"step": 1}, {"step": 2}]
    assert "dropping its torn last line 4" in caplog.text


def test_a_damaged_middle_line_is_an_error_naming_file_and_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(DamagedLogError, match=r"metrics.jsonl line 2 is damaged"):
        read_jsonl_log(log)


def test_the_reports_read_metrics_through_the_checked_reader(tmp_path):
    """The report's reader of metrics.jsonl (curves, the penalty's share) drops only a torn last line and
    names a damaged line before it, as training's resume does (it skipped every bad line silently)."""
    from decpo.integrity import DamagedLogError
    from decpo.reports.curves import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 0.7}\n{"step": 2, "train/lo')
    assert read_metrics(path) == [{"step": 1, "train/loss": 0.7}]
    path.write_text('{"step": 1, "train/loss": 0.7}\n{"step": 2, "tr\n{"step": 3, "train/loss": 0.6}\n')
    with pytest.raises(DamagedLogError, match=r"metrics.jsonl line 2 is damaged"):
        read_metrics(path)
