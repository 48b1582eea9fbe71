"""Faults and bad input caught early and said clearly: the tracking store checked before training, one run per
suite folder, --set parsing, report selections, file modes under the umask, killed builds cleaned up, duplicate
annotation records and broken images refused with the file and the fix."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vlpbench.benchmarks.cli import main
from vlpbench.benchmarks.cli.common import parse_sets as _parse_sets
from vlpbench.benchmarks.data import DatasetError, open_dataset
from vlpbench.benchmarks.data.files import check_image_header
from vlpbench.benchmarks.runtime import LOCK_FILE, FolderBusy, folder_lock
from vlpbench.methods import ConfigError
from vlpbench.reports import sources, tracking
from vlpbench.reports.store import atomic_write_json, respect_umask, save_ranks
from tests.real_fixtures import make_flickr_albef, make_flickr_karpathy

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tracking_store_is_checked_in_seconds(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(tracking.TrackingError, match="did not answer within 2 s"):
        tracking.check_tracking_uri(f"http://127.0.0.1:{_free_port()}", timeout_s=2)
    assert time.perf_counter() - t0 < 10
    bad = tmp_path / "mlflow.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(tracking.TrackingError, match="not a readable SQLite database"):
        tracking.check_tracking_uri(f"sqlite:///{bad}")
    with pytest.raises(tracking.TrackingError, match="scheme 'ftp' is not supported"):
        tracking.check_tracking_uri("ftp://host/mlruns")
    with pytest.raises(tracking.TrackingError, match="plain path; write sqlite:///"):
        tracking.check_tracking_uri(str(tmp_path / "runs"))
    fresh = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    assert tracking.check_tracking_uri(fresh) == fresh                       # created on first use


def test_run_refuses_a_bad_store_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--set", "methods=[clip]", "--output", str(tmp_path), "--tracking-uri", "ftp://x/y"]) == 2
    assert "scheme 'ftp'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/jobs"))                                  # nothing trained


_HOLDER = """
import sys, time
from pathlib import Path
from vlpbench.benchmarks.runtime import folder_lock
with folder_lock(Path(sys.argv[1]), "holder"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_one_run_per_suite_folder_and_stale_locks_taken_over(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "outputs" / "default"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=f"process {holder.pid} on {socket.gethostname()}"):
            with folder_lock(folder):
                pass
        assert main(["run", "--output", str(tmp_path / "outputs")]) == 2      # the default suite's folder
        assert f"process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(folder) as took_over:                                      # killed: its lock is stale
        assert took_over is not None and f"process {holder.pid}" in took_over
    with folder_lock(folder) as took_over:                                      # released cleanly: nothing to say
        assert took_over is None
    assert (folder / LOCK_FILE).read_text() == ""


def test_set_values_dotted_keys_and_yaml_errors() -> None:
    from vlpbench.benchmarks.suite import load_suite

    suite = load_suite(None, _parse_sets(["train.tiny.steps=2", "methods=[clip]", "sizes=[tiny]"]))
    assert (suite.budget("tiny").steps, suite.budget("tiny").batch_size, suite.methods) == (2, 256, ["clip"])
    with pytest.raises(ConfigError, match="not valid YAML.*quote it"):
        _parse_sets(["methods=[clip"])
    assert main(["run", "--set", "methods=[clip", "--dry-run"]) == 2


def test_report_selections_fail_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.mlflow_client(uri).create_experiment("vlpbench-x")
    assert main(["report", "--tracking-uri", uri, "--run-id", "0123456789abcdef", "--output", str(tmp_path)]) == 2
    assert "no MLflow run '0123456789abcdef'" in capsys.readouterr().err
    assert main(["report", "--tracking-uri", uri, "--filter", "garbage (((", "--output", str(tmp_path)]) == 2
    assert "could not search with the filter" in capsys.readouterr().err
    quoted = tmp_path / "it's here"                                   # a quote in the folder: no broken filter
    assert sources.select_runs(tracking.mlflow_client(uri), suite="x", suite_dir=quoted) == []


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        save_ranks(tmp_path / "r.npz", i2t=np.arange(1, 4))
        (tmp_path / "d").mkdir()
        os.chmod(tmp_path / "d", 0o700)
        respect_umask(tmp_path / "d", directory=True)
        os.umask(0o002)
        atomic_write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    mode = {n: stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.json", "r.npz", "d", "b.json")}
    assert mode == {"a.json": 0o644, "r.npz": 0o644, "d": 0o755, "b.json": 0o664}


def test_a_killed_stage_build_is_cleaned_up_on_the_next_start(tmp_path: Path) -> None:
    from vlpbench.benchmarks.training.stage_cache import cached_stage

    fp = "f" * 64
    leftover = tmp_path / "stage" / f".{fp[:16]}-killed"
    leftover.mkdir(parents=True)
    (leftover / "half.bin").write_bytes(b"x")

    def build(folder: Path) -> dict:
        (folder / "w.bin").write_bytes(b"ok")
        return {"built": True}

    target, record, reused = cached_stage(tmp_path, "stage", fp, "record.json", build)
    assert not leftover.exists() and not reused and (target / "w.bin").read_bytes() == b"ok"


def test_duplicate_image_records_are_refused(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path / "albef")
    recs = json.loads((root / "flickr30k_test.json").read_text())
    (root / "flickr30k_test.json").write_text(json.dumps([*recs, recs[0]]))
    with pytest.raises(DatasetError, match=r"record 2: image flickr30k-images/100.jpg already has record 0"):
        open_dataset("flickr30k", root).retrieval_split("test")
    assert open_dataset("flickr30k", root).pretrain_corpus("train")   # train: one record per caption, as ALBEF's

    root = make_flickr_karpathy(tmp_path / "karpathy")
    path = root / "annotations" / "dataset_flickr30k.json"
    data = json.loads(path.read_text())
    data["images"].append(dict(data["images"][0]))
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="already appears at images\\[0\\] of the test split"):
        open_dataset("flickr30k", root).retrieval_split("test")


def test_broken_images_are_found_without_decoding(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path / "albef")
    image = root / "flickr30k-images" / "101.jpg"
    assert check_image_header(image) == (32, 24)
    image.write_bytes(image.read_bytes()[:-10])                                     # a cut download
    with pytest.raises(DatasetError, match="truncated JPEG"):
        check_image_header(image)
    (root / "flickr30k-images" / "100.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="not a readable image"):
        check_image_header(root / "flickr30k-images" / "100.jpg")
    from vlpbench.benchmarks.data.verify import verify

    report = verify("flickr30k", root)                                             # no --decode
    broken = [c for c in report.checks if c.status == "broken"]
    assert broken and "2 of 2 files are not readable (header)" in broken[0].detail


def _ckpt_state(fp: str, step: int) -> dict:
    return {"model": {"w": np.zeros(1)}, "optimizer": {}, "scheduler": {}, "step": step, "job_fingerprint": fp}


def test_resume_falls_back_from_a_damaged_checkpoint_and_names_foreign_files(tmp_path: Path) -> None:
    import torch

    from vlpbench.benchmarks.training.checkpoint import CheckpointError, load_checkpoint, resolve_resume, save_checkpoint

    folder = tmp_path / "checkpoints"
    for step in (25, 50):
        save_checkpoint(folder, step, {**_ckpt_state("fp", step), "model": {"w": torch.zeros(1)}}, keep=2)
    (folder / "step_00000050.pt").write_bytes(b"half a checkpoint")                 # killed while written
    said: list[str] = []
    assert resolve_resume("latest", folder, log=said.append) == folder / "step_00000025.pt"
    assert "skipping a damaged checkpoint" in said[0] and "step_00000050.pt" in said[0]
    said.clear()
    assert resolve_resume("latest", tmp_path / "none", log=said.append) is None
    assert "starting from step 0" in said[0]
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a vlpbench training checkpoint .no model, optimizer"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_resume_after_a_config_change_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    import torch

    from vlpbench.benchmarks.pipeline import check_resumable
    from vlpbench.benchmarks.training.checkpoint import CheckpointError, save_checkpoint

    job = tmp_path / "job"
    save_checkpoint(job / "checkpoints", 25, {**_ckpt_state("old", 25), "model": {"w": torch.zeros(1)}}, keep=2)
    (job / "pretrain.json").write_text("{}")
    (job / "eval" / "x").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="another configuration.*nothing was changed"):
        check_resumable(job, "latest", "new", pre=None)
    check_resumable(job, "latest", "old", pre=None)                                 # same configuration: fine
    for f in (job / "checkpoints").iterdir():
        f.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint of this configuration"):
        check_resumable(job, "latest", "new", pre=object())                          # type: ignore[arg-type]
    assert (job / "pretrain.json").is_file() and (job / "eval" / "x").is_dir()


def test_shipped_budgets_checkpoint_without_changing_fingerprints() -> None:
    from vlpbench.benchmarks.pipeline import job_fingerprint
    from vlpbench.benchmarks.suite import load_suite

    default = load_suite(None)
    assert default.budget("tiny").checkpoint_every == 25
    assert 0 < default.budget("cpu").checkpoint_every < default.budget("cpu").steps
    config = {"method": {"name": "clip"}, "train": {"steps": 250, "checkpoint_every": 0}, "retrieval": {}}
    assert job_fingerprint(config) == job_fingerprint({**config, "train": {"steps": 250, "checkpoint_every": 25}})
    assert job_fingerprint(config) != job_fingerprint({**config, "train": {"steps": 251, "checkpoint_every": 0}})


def test_a_run_interrupted_while_logging_is_failed_relogged_and_left_out_of_reports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from tests.report_fixtures import make_suite

    suite_dir = make_suite(tmp_path)
    job_dir = suite_dir / "jobs" / "clip-tiny-s0"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real = MlflowClient.log_artifact
    calls = {"n": 0}

    def crash_once(self, run_id, local_path, artifact_path=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:             # the pretrain run's artifacts went through; the evaluation's crashes
            raise KeyboardInterrupt("killed while logging")
        return real(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifact", crash_once)
    with pytest.raises(KeyboardInterrupt):
        tracking.log_job(job_dir, suite_dir, uri, "vlpbench-fixture")
    client = tracking.mlflow_client(uri)
    stuck = [r for r in client.search_runs([client.get_experiment_by_name("vlpbench-fixture").experiment_id])
             if r.info.status == "RUNNING"]
    assert len(stuck) == 1
    inputs = sources.from_mlflow(uri, tmp_path / "dl", experiment="vlpbench-fixture")
    assert len(inputs.evaluations) == 0 and "1 run(s) left out: not FINISHED" in inputs.source

    monkeypatch.setattr(MlflowClient, "log_artifact", real)
    runs = tracking.log_job(job_dir, suite_dir, uri, "vlpbench-fixture")            # the next run's logging
    old = client.get_run(stuck[0].info.run_id)
    assert old.info.status == "FAILED" and tracking.INTERRUPTED_TAG in old.data.tags
    assert client.get_run(runs["zeroshot_retrieval"]).info.status == "FINISHED"
    assert tracking.log_job(job_dir, suite_dir, uri, "vlpbench-fixture") == runs     # idempotent after that
    inputs = sources.from_mlflow(uri, tmp_path / "dl2", experiment="vlpbench-fixture")
    assert sorted(e.benchmark for e in inputs.evaluations) == ["latency", "zeroshot_retrieval"]


def test_a_webdataset_shard_cut_at_a_member_boundary_is_refused(tmp_path: Path) -> None:
    import io
    import tarfile

    from PIL import Image

    from vlpbench.benchmarks.data.corpora import index_shard, write_shard

    def jpeg(v: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), v, dtype=np.uint8)).save(buf, "JPEG")
        return buf.getvalue()

    shard = tmp_path / "00000.tar"
    write_shard(shard, [(f"s{i:03d}", jpeg(i), f"caption {i}") for i in range(8)])
    members, texts = index_shard(shard)
    assert len(members) == len(texts) == 8
    with tarfile.open(shard) as tar:                          # the offset where sample 6 begins: a member boundary
        cut = next(m.offset for m in tar.getmembers() if m.name.startswith("s006"))
    shard.write_bytes(shard.read_bytes()[:cut])
    with tarfile.open(shard) as tar:                          # Python's tarfile reads it as a shorter, valid tar
        assert len(tar.getmembers()) == 12
    with pytest.raises(DatasetError, match="without tar's end-of-archive marker: it was cut"):
        index_shard(shard)


def test_a_record_that_cannot_be_written_is_kept_and_the_error_says_where(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from vlpbench.reports import store
    from tests.report_fixtures import make_suite

    rec = store.read_evaluation(make_suite(tmp_path) / "jobs" / "clip-tiny-s0" / "eval" / "zeroshot_retrieval" /
                                "results.json")
    target = tmp_path / "readonly" / "eval" / "results.json"
    real = store.atomic_write_json

    def refuse(path: Path, payload: object) -> Path:      # root ignores chmod, so the refusal is simulated
        if tmp_path / "readonly" in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, payload)

    monkeypatch.setattr(store, "atomic_write_json", refuse)
    monkeypatch.setattr(store.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    with pytest.raises(store.RecordNotSaved, match="Permission denied.*kept in") as err:
        store.write_record(target, rec)
    kept = Path(str(err.value).split("kept in ")[1].split(" (with")[0])
    saved = json.loads(kept.read_text())
    assert saved["intended_path"] == str(target) and saved["metrics"] == rec.metrics


def test_a_broken_image_of_a_csv_corpus_stops_the_run_before_training(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    root = tmp_path / "corpus"
    (root / "img").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / "img" / f"{i}.jpg")
    (root / "img" / "2.jpg").write_bytes((root / "img" / "2.jpg").read_bytes()[:-10])      # truncated
    (root / "pairs.csv").write_text("filepath,title\n" + "".join(f"img/{i}.jpg,caption {i}\n" for i in range(3)))
    corpus = {"name": "mini", "root": str(root), "layout": {"files": ["pairs.csv"], "image_key": "filepath",
                                                          "caption_key": "title"}}
    assert main(["run", "--set", "methods=[clip]", "--set", f"dataset={json.dumps({'corpus': corpus})}",
                 "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2.jpg: " in err and ("truncated JPEG" in err or "Truncated File Read" in err)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("pretrain.json"))


def test_a_broken_image_of_an_evaluation_set_stops_the_run_before_training(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = make_flickr_albef(tmp_path / "flickr")
    (root / "flickr30k-images" / "101.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    sets = json.dumps({"datasets": [{"name": "flickr30k", "root": str(root)}]})
    assert main(["run", "--set", "methods=[clip]", "--set", f"retrieval={sets}", "--output", str(tmp_path / "o")]) == 2
    assert "101.jpg: not a readable image" in capsys.readouterr().err
    assert not list((tmp_path / "o").rglob("pretrain.json"))


def test_a_killed_dataset_build_is_cleaned_up_on_the_next_start(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from vlpbench.benchmarks.data.builtin import build

    target = tmp_path / "builtin" / "abc"
    leftover = tmp_path / "builtin" / "abc.tmp-killed"
    leftover.mkdir(parents=True)

    def generate(cfg: object, folder: Path) -> None:
        (folder / "manifest.json").write_text("{}")

    monkeypatch.setattr(build, "generate", generate)
    old = os.umask(0o022)
    try:
        assert build._generate_into(None, target) == target     # type: ignore[arg-type]
    finally:
        os.umask(old)
    assert not leftover.exists() and (target / "manifest.json").is_file()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
