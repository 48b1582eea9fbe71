"""MLflow tracking: log finished job folders, read results back.

Logging happens only after a job's records are on disk (reports/store.py), from those records,
so MLflow never holds a number that the run folder does not. Each job becomes one parent run
(pretraining: config as params, loss curves as metrics, fingerprint and code version as tags)
with one nested run per evaluation (metrics, protocol fields as tags, results JSON and per-query
ranks as artifacts). A ledger in the job folder (`mlflow.json`) makes logging idempotent per
tracking URI.

The default store is embedded: `sqlite:///<output>/mlflow.db` with artifacts beside it, so
nothing needs a server. `--tracking-uri` or `MLFLOW_TRACKING_URI` points at a lab's server.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vlpbench.reports.store import (PRETRAIN_FILE, RESULTS_FILE, EvaluationRecord, PretrainRecord, atomic_write_json,
                           read_evaluation, read_pretrain)

LEDGER = "mlflow.json"
MAX_PARAM_LEN = 6000


def resolve_tracking_uri(uri: str | None, output_root: Path) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(output_root / 'mlflow.db').resolve()}"


class TrackingError(ValueError):
    """The tracking URI cannot be used; the message names it and the fix."""


def check_tracking_uri(uri: str, timeout_s: float = 10.0) -> str:
    """Refuse, within `timeout_s`, a tracking store that logging would fail on after hours of training: a server
    that does not answer, an sqlite file that is not a database, an unsupported scheme or a bare path. Returns the
    URI. MLflow itself retries a dead server for minutes; this asks once."""
    import sqlite3
    import urllib.error
    import urllib.request
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                resp.read(1)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise TrackingError(f"tracking server {uri} refused the request (HTTP {err.code}): set "
                                    "MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN") from None
            raise TrackingError(f"tracking server {uri} answered HTTP {err.code} to an experiments search; is it "
                                "an MLflow tracking server (`mlflow server`)?") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(f"tracking server {uri} did not answer within {timeout_s:g} s ({reason}); start it, "
                                "fix --tracking-uri / MLFLOW_TRACKING_URI, or leave both unset for the embedded "
                                "store in the output folder") from None
        return uri
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if path is None:
            raise TrackingError(f"tracking URI {uri}: write sqlite:///<absolute path>/mlflow.db")
        if path.exists():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s) as db:
                    db.execute("PRAGMA schema_version").fetchone()
            except sqlite3.DatabaseError as err:
                raise TrackingError(f"tracking store {path} is not a readable SQLite database ({err}); move it "
                                    "aside (MLflow makes a new one) or point --tracking-uri elsewhere") from None
        elif not _writable_parent(path):
            raise TrackingError(f"tracking store {path} cannot be created: {path.parent} is not a writable folder")
        return uri
    if scheme == "file":
        return uri
    if scheme == "" or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):
        raise TrackingError(f"tracking URI {uri!r} is a plain path; write sqlite:///{Path(uri).resolve()}/mlflow.db "
                            f"(a database in that folder) or {Path(uri).resolve().as_uri()} (MLflow's file store)")
    raise TrackingError(f"tracking URI {uri}: the scheme {scheme!r} is not supported; use http(s)://host:port (an "
                        "MLflow server), sqlite:///path/mlflow.db or file:///path")


def _writable_parent(path: Path) -> bool:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return os.access(parent, os.W_OK)


def is_embedded(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:")


def mlflow_client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str, artifact_root: Path | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (artifact_root / name).resolve().as_uri() if artifact_root is not None else None
    return client.create_experiment(name, artifact_location=location)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists and None become JSON."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            if len(text) > MAX_PARAM_LEN:
                text = text[: MAX_PARAM_LEN - 40] + " …[truncated; see config.json artifact]"
            out[key] = text
    return out


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def metric_name(key: str) -> str:
    """A record's metric key as MLflow accepts it (letters, digits, _ - . / space): 'joint/mAP@10' ->
    'joint/mAP_at_10'; every other character becomes '_'."""
    return re.sub(r"[^\w\-./ ]", "_", key.replace("@", "_at_").replace("+", "_plus_"))


def _log(client: Any, run_id: str, params: Mapping[str, str], metrics: list[tuple[str, float, int]]) -> None:
    import time

    from mlflow.entities import Metric, Param

    for chunk in _chunks([Param(k, v) for k, v in sorted(params.items())], 100):
        client.log_batch(run_id, params=chunk)
    now = int(time.time() * 1000)
    for chunk in _chunks([Metric(metric_name(k), float(v), now, step) for k, v, step in metrics], 1000):
        client.log_batch(run_id, metrics=chunk)


def _common_tags(record: PretrainRecord | EvaluationRecord, suite_dir: Path) -> dict[str, str]:
    env = record.environment
    return {
        "vlpbench.suite": record.suite,
        "vlpbench.suite_dir": str(suite_dir.resolve()),
        "vlpbench.job": record.job,
        "vlpbench.method": record.method,
        "vlpbench.variant": record.variant or "",
        "vlpbench.size": record.size,
        "vlpbench.seed": str(record.seed),
        "git_commit": str(env.get("git_commit")),
        "git_dirty": str(env.get("git_dirty")),
        "torch": str(env.get("torch")),
        "device": str(env.get("device")),
        "device_name": str(env.get("device_name")),
        "dataset": f"{record.dataset['dataset']}/{record.dataset['split']}",
        "dataset_fingerprint": record.dataset["dataset_fingerprint"],
        "split_fingerprint": record.dataset["fingerprint"],
    }


def _history_metrics(path: Path) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        for k, v in rec.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                out.append((f"train/{k}", float(v), int(rec["step"])))
    return out


def _log_artifact_json(client: Any, run_id: str, name: str, payload: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / name
        p.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        client.log_artifact(run_id, str(p))


class _Ledger:
    """Which records of a folder are logged at a tracking URI (LEDGER beside them). A run is entered as pending
    before it is filled and as done after set_terminated; a run still pending on the next call was interrupted
    (a crash or kill while logging): it is marked FAILED, tagged, and the record is logged again."""

    def __init__(self, path: Path, uri: str) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.mine: dict[str, Any] = self.data.setdefault(uri, {})

    def done(self, key: str) -> str | None:
        value = self.mine.get(key)
        return value if isinstance(value, str) else None

    def begin(self, client: Any, exp_id: str, key: str, tags: dict[str, str]) -> str:
        stale = self.mine.get(key)
        if isinstance(stale, dict) and stale.get("pending"):
            _mark_interrupted(client, stale["pending"])
        run_id = client.create_run(exp_id, tags=tags).info.run_id
        self.mine[key] = {"pending": run_id}
        atomic_write_json(self.path, self.data)
        return run_id

    def finish(self, client: Any, key: str, run_id: str) -> str:
        client.set_terminated(run_id, "FINISHED")
        self.mine[key] = run_id
        atomic_write_json(self.path, self.data)
        return run_id


INTERRUPTED_TAG = "vlpbench.interrupted"


def _mark_interrupted(client: Any, run_id: str) -> None:
    try:
        client.set_tag(run_id, INTERRUPTED_TAG, "logging was interrupted; the record was logged again as a new run")
        client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: BLE001 — the run may be gone (deleted by hand): nothing left to close
        pass


def log_job(job_dir: Path, suite_dir: Path, tracking_uri: str, experiment: str,
            artifact_root: Path | None = None) -> dict[str, str]:
    """Log a finished job folder; returns {'pretrain': run_id, '<benchmark>': run_id, ...}."""
    pre = read_pretrain(job_dir / PRETRAIN_FILE)
    ledger = _Ledger(job_dir / LEDGER, tracking_uri)
    client = mlflow_client(tracking_uri)
    exp_id = experiment_id(client, experiment, artifact_root)
    runs: dict[str, str] = {}

    pre_key = f"pretrain@{pre.created_utc}"
    parent = ledger.done(pre_key)
    if parent is None:
        tags = {**_common_tags(pre, suite_dir), "vlpbench.kind": "pretrain", "mlflow.runName": pre.job,
                "job_fingerprint": pre.job_fingerprint}
        parent = ledger.begin(client, exp_id, pre_key, tags)
        summary = {f"pretrain/{k}": float(v) for k, v in pre.summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        _log(client, parent, flatten(pre.config),
             _history_metrics(job_dir / pre.history_file) + [(k, v, 0) for k, v in summary.items()])
        client.log_artifact(parent, str(job_dir / PRETRAIN_FILE))
        client.log_artifact(parent, str(job_dir / pre.history_file))
        client.log_artifact(parent, str(job_dir / "model" / "model_config.json"))
        _log_artifact_json(client, parent, "config.json", pre.config)
        ledger.finish(client, pre_key, parent)
    runs["pretrain"] = parent

    for results in sorted(job_dir.glob(f"eval/*/{RESULTS_FILE}")):
        ev = read_evaluation(results)
        key = f"{ev.benchmark}@{ev.created_utc}"
        runs[ev.benchmark] = ledger.done(key) or _log_evaluation_run(client, exp_id, results, ev, suite_dir, parent,
                                                                     ledger, key)
    return runs


def _log_evaluation_run(client: Any, exp_id: str, results: Path, ev: EvaluationRecord, suite_dir: Path,
                        parent: str | None, ledger: _Ledger, key: str) -> str:
    """One MLflow run for one evaluation record: tags (protocol, reproduction status), metrics, artifacts."""
    tags = {**_common_tags(ev, suite_dir), "vlpbench.kind": "evaluation", "vlpbench.benchmark": ev.benchmark,
            "mlflow.runName": f"{ev.job}/{ev.benchmark}",
            **({"mlflow.parentRunId": parent} if parent else {}),
            **{f"protocol.{k}": json.dumps(v) if not isinstance(v, str) else v for k, v in ev.protocol.items()}}
    if ev.reproduction is not None:
        tags.update({"vlpbench.claim": ev.reproduction["claim"], "vlpbench.reproduction": ev.reproduction["status"]})
    run_id = ledger.begin(client, exp_id, key, tags)
    _log(client, run_id, flatten(ev.config), [(k, v, 0) for k, v in ev.metrics.items()]
         + [(f"time/{k}", v, 0) for k, v in ev.timings.items()])
    client.log_artifact(run_id, str(results))
    if ev.ranks_file and (results.parent / ev.ranks_file).is_file():
        client.log_artifact(run_id, str(results.parent / ev.ranks_file))
    _log_artifact_json(client, run_id, "config.json", ev.config)
    return ledger.finish(client, key, run_id)


def log_evaluation(results: Path, suite_dir: Path, tracking_uri: str, experiment: str,
                   artifact_root: Path | None = None) -> str:
    """Log one evaluation record that has no pretraining job (`vlpbench eval` / `reproduce`); returns the run id.
    Logged once per record (a ledger beside it), so a re-run of the logging adds no duplicate."""
    ev = read_evaluation(results)
    ledger = _Ledger(results.parent / LEDGER, tracking_uri)
    key = f"{ev.benchmark}@{ev.created_utc}"
    done = ledger.done(key)
    if done is not None:
        return done
    client = mlflow_client(tracking_uri)
    return _log_evaluation_run(client, experiment_id(client, experiment, artifact_root), results, ev, suite_dir,
                               None, ledger, key)
