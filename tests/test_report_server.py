"""`vlpbench report` against a real MLflow tracking server started on localhost (as a lab's would be)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vlpbench.benchmarks import cli
from vlpbench.reports import tracking
from vlpbench.reports.build import build_report
from vlpbench.reports.sources import from_folder
from tests.report_fixtures import make_suite

pytestmark = pytest.mark.integration   # a server process: make test-integration (CI)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                             "--artifacts-destination", str(root / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.read().strip() == b"OK":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the MLflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_report_of_a_selection_from_a_tracking_server(server: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    suite_dir = make_suite(tmp_path)
    runs = {}
    for job in sorted((suite_dir / "jobs").iterdir()):
        runs[job.name] = tracking.log_job(job, suite_dir, server, "vlpbench-fixture")
    out = tmp_path / "from-server"
    # any selection: here every run of the suite by filter, across all experiments of the server
    assert cli.main(["report", "--tracking-uri", server, "--filter", "tags.`vlpbench.suite` = 'fixture'",
                     "--title", "fixture", "--report-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and "6 figure(s)" in printed
    local = build_report(from_folder(suite_dir), tmp_path / "local", title="fixture")
    served = json.loads((out / "leaderboard.json").read_text())
    assert served["rows"] == json.loads(local.json.read_text())["rows"] and served["source"] == server
    assert len(served["rows"]) == 8
    md = (out / "report.md").read_text()
    assert f"from `{server}`" in md and md.count("![") == 6 and "## Pretraining" in md
    # explicit run ids: one evaluation brings its pretraining run along
    ev_id = runs["tcl-tiny-s0"]["zeroshot_retrieval_rerank"]
    assert cli.main(["report", "--tracking-uri", server, "--run-id", ev_id, "--report-dir", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "leaderboard.json").read_text())
    assert [(r["job"], r["benchmark"]) for r in one["rows"]] == [("tcl-tiny-s0", "zeroshot_retrieval_rerank")]
    assert "| tcl | tiny | 0 | 50 × 32 |" in (tmp_path / "one" / "report.md").read_text()
    # a selection that matches nothing says so
    assert cli.main(["report", "--tracking-uri", server, "--filter", "tags.`vlpbench.method` = 'nope'",
                     "--report-dir", str(tmp_path / "none")]) == 2
    assert "matched no vlpbench runs" in capsys.readouterr().err
