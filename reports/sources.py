"""What a report is built from: records plus the files beside them (per-query ranks, training histories).

Two sources give the same `ReportInputs`:

- `from_folder(suite_dir)`: a suite's run folder (jobs/*/pretrain.json, jobs/*/eval/*/results.json).
- `from_mlflow(uri, ...)`: any selection of runs in an MLflow store, embedded or a server: a suite (its tags),
  explicit run ids, or an MLflow filter string, in one experiment or all of them. Artifacts are downloaded into a
  work folder. The same job of the same suite folder logged more than once (a re-run) counts once: its newest run.
  Selecting an evaluation run brings its parent pretraining run along (the pretraining table, loss curves).

Nothing here renders; `reports/build.py` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlpbench.reports.store import (PRETRAIN_FILE, RESULTS_FILE, EvaluationRecord, PretrainRecord, read_evaluation,
                           read_pretrain)
from vlpbench.reports.tracking import mlflow_client

RecordKey = tuple[str, str, str]


def record_key(rec: PretrainRecord | EvaluationRecord) -> RecordKey:
    """(job, benchmark or 'pretrain', created time): one record, wherever it was read from."""
    what = rec.benchmark if isinstance(rec, EvaluationRecord) else "pretrain"
    return rec.job, what, rec.created_utc


class SelectionError(ValueError):
    """A run selection that cannot give a report (no runs, or runs vlpbench did not log)."""


@dataclass
class ReportInputs:
    pretrain: list[PretrainRecord]
    evaluations: list[EvaluationRecord]
    source: str                                   # where they came from, as the report states it
    ranks_files: dict[RecordKey, Path] = field(default_factory=dict)
    history_files: dict[RecordKey, Path] = field(default_factory=dict)
    _ranks: dict[RecordKey, dict[str, np.ndarray] | None] = field(default_factory=dict, repr=False)

    def ranks(self, rec: EvaluationRecord) -> Mapping[str, np.ndarray] | None:
        """The record's per-query image-text ranks {'i2t', 't2i'}; None for other benchmarks or without the file."""
        key = record_key(rec)
        if key not in self._ranks:
            path = self.ranks_files.get(key)
            if path is None or "i2t_R1" not in rec.metrics:
                self._ranks[key] = None
            else:
                with np.load(path) as saved:
                    self._ranks[key] = {"i2t": saved["i2t"], "t2i": saved["t2i"]}
        return self._ranks[key]

    def history(self, rec: PretrainRecord) -> list[dict[str, float]]:
        """The pretraining job's logged steps (history.jsonl), [] when the file is not at hand."""
        path = self.history_files.get(record_key(rec))
        if path is None:
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def from_folder(suite_dir: Path) -> ReportInputs:
    """Every record under a suite folder, with the ranks and histories saved beside them."""
    inputs = ReportInputs([], [], source=str(suite_dir))
    for path in sorted(suite_dir.glob(f"jobs/*/{PRETRAIN_FILE}")):
        pre = read_pretrain(path)
        inputs.pretrain.append(pre)
        if (path.parent / pre.history_file).is_file():
            inputs.history_files[record_key(pre)] = path.parent / pre.history_file
    for path in sorted(suite_dir.glob(f"jobs/*/eval/*/{RESULTS_FILE}")):
        ev = read_evaluation(path)
        inputs.evaluations.append(ev)
        if ev.ranks_file and (path.parent / ev.ranks_file).is_file():
            inputs.ranks_files[record_key(ev)] = path.parent / ev.ranks_file
    return inputs


def select_runs(client: Any, *, experiment: str | None = None, suite: str | None = None,
                suite_dir: Path | None = None, run_ids: Sequence[str] = (), filter_string: str | None = None,
                finished: bool = True) -> list[Any]:
    """The vlpbench runs a selection names, newest first, one per (suite folder, job, benchmark). Only FINISHED
    runs are reported (a run left RUNNING or FAILED was interrupted while logging); `finished=False` lists the
    others instead. Runs named by id are taken whatever their state."""
    if run_ids:
        runs = []
        for r in run_ids:
            try:
                runs.append(client.get_run(r))
            except Exception as err:  # MLflow raises MlflowException (or a REST error) for an unknown id
                raise SelectionError(f"no MLflow run {r!r} at this tracking URI ({type(err).__name__}); "
                                     "`mlflow runs list --experiment-id ID` lists the ids") from None
    else:
        if experiment is not None:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise SelectionError(f"no MLflow experiment {experiment!r} at this tracking URI (vlpbench names its "
                                     "experiments vlpbench-<suite>; `mlflow experiments search` lists them)")
            exp_ids = [exp.experiment_id]
        else:
            exp_ids = [e.experiment_id for e in client.search_experiments()]
        clauses = ["tags.`vlpbench.kind` != ''"]
        if suite is not None:
            clauses.append(f"tags.`vlpbench.suite` = '{suite}'")
        if filter_string:
            clauses.append(filter_string)  # MLflow's grammar: clauses joined by `and` (no `or`)
        try:
            runs = client.search_runs(exp_ids, filter_string=" and ".join(clauses),
                                      order_by=["attributes.start_time DESC"], max_results=5000) if exp_ids else []
        except Exception as err:  # a malformed filter: MlflowException with MLflow's own message
            raise SelectionError(f"MLflow could not search with the filter {filter_string!r}: "
                                 f"{str(err).splitlines()[0][:300]}; write clauses like "
                                 "\"tags.`vlpbench.method` = 'clip'\" joined by and") from None
        if suite_dir is not None:   # compared here, not in the filter: a folder name may hold a quote
            where = str(suite_dir.resolve())
            runs = [r for r in runs if r.data.tags.get("vlpbench.suite_dir") == where]
    for run in runs:
        if "vlpbench.kind" not in run.data.tags:
            raise SelectionError(f"run {run.info.run_id} ({run.info.run_name}) was not logged by vlpbench (no "
                                 "vlpbench.kind tag); select vlpbench runs only")
    if not run_ids:
        runs = [r for r in runs if (r.info.status == "FINISHED") == finished]
        if not finished:
            return runs
    newest: dict[tuple[str, str, str], Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time, reverse=True):
        tags = run.data.tags
        key = (tags.get("vlpbench.suite_dir", ""), tags.get("vlpbench.job", ""),
               tags.get("vlpbench.benchmark", tags["vlpbench.kind"]))
        newest.setdefault(key, run)
    return list(newest.values())


def _download(client: Any, run: Any, name: str, dst: Path, *, required: bool) -> Path | None:
    target = dst / run.info.run_id
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run.info.run_id, name, str(target)))
    except Exception as err:  # MLflow raises several types for a missing artifact
        if required:
            raise SelectionError(f"run {run.info.run_id} ({run.info.run_name}): its artifact {name} could not be "
                                 f"read ({type(err).__name__}: {err}); was it logged by `vlpbench run`, and is its "
                                 "artifact store reachable from here?") from err
        return None


def from_mlflow(uri: str, workdir: Path, *, experiment: str | None = None, suite: str | None = None,
                suite_dir: Path | None = None, run_ids: Sequence[str] = (), filter_string: str | None = None,
                with_parents: bool = True) -> ReportInputs:
    """The records of the selected runs, read back from their MLflow artifacts into `workdir`."""
    client = mlflow_client(uri)
    runs = select_runs(client, experiment=experiment, suite=suite, suite_dir=suite_dir, run_ids=run_ids,
                       filter_string=filter_string)
    if with_parents:
        have = {r.info.run_id for r in runs}
        parents = {r.data.tags.get("mlflow.parentRunId") for r in runs} - have - {None, ""}
        runs += [client.get_run(p) for p in sorted(parents)]
    unfinished = [] if run_ids else select_runs(client, experiment=experiment, suite=suite, suite_dir=suite_dir,
                                                filter_string=filter_string, finished=False)
    note = (f" ({len(unfinished)} run(s) left out: not FINISHED — logging was interrupted, or is still going; "
            "the next `vlpbench run` marks interrupted ones FAILED and logs their records again)" if unfinished else "")
    inputs = ReportInputs([], [], source=uri + note)
    for run in sorted(runs, key=lambda r: (r.data.tags.get("vlpbench.job", ""), r.info.start_time)):
        if run.data.tags["vlpbench.kind"] == "pretrain":
            pre = read_pretrain(_download(client, run, PRETRAIN_FILE, workdir, required=True))  # type: ignore[arg-type]
            inputs.pretrain.append(pre)
            history = _download(client, run, pre.history_file, workdir, required=False)
            if history is not None:
                inputs.history_files[record_key(pre)] = history
        else:
            ev = read_evaluation(_download(client, run, RESULTS_FILE, workdir, required=True))  # type: ignore[arg-type]
            inputs.evaluations.append(ev)
            if ev.ranks_file:
                ranks = _download(client, run, ev.ranks_file, workdir, required=False)
                if ranks is not None:
                    inputs.ranks_files[record_key(ev)] = ranks
    return inputs
