"""The cache every preparatory stage shares (unimodal init, visual tokenizer): look up, or build atomically.

A stage's output lives in `<cache_root>/<kind>/<fingerprint[:16]>` beside a JSON record holding
the full fingerprint. It is built in a temporary sibling folder and renamed into place only when
complete, so an interrupted stage is never reused; a failed build leaves nothing behind. A lock file beside it
(`<cache_root>/.locks/`) lets one process build while others (array tasks on shared storage) wait for it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlpbench.benchmarks.runtime import file_lock
from vlpbench.reports.store import respect_umask


def cached_stage(cache_root: Path, kind: str, fingerprint: str, record_file: str,
                 build: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any], bool]:
    """(folder, record, reused). `build(tmp)` writes the outputs into tmp and returns the record
    (the fingerprint is added to it); the record is written last, then the folder is published."""
    target = cache_root / kind / fingerprint[:16]
    # One builder at a time: concurrent jobs (SLURM array tasks) needing the same stage wait and then reuse it.
    with file_lock(cache_root / ".locks" / f"{kind}-{fingerprint[:16]}.lock"):
        return _lookup_or_build(target, fingerprint, record_file, build)


def _lookup_or_build(target: Path, fingerprint: str, record_file: str,
                     build: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any], bool]:
    if (target / record_file).is_file():
        record = json.loads((target / record_file).read_text())
        if record.get("fingerprint") == fingerprint:
            return target, record, True
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{fingerprint[:16]}-*"):   # a killed build's leftovers (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fingerprint[:16]}-", dir=target.parent))
    respect_umask(tmp, directory=True)
    try:
        record = {**build(tmp), "fingerprint": fingerprint}
        (tmp / record_file).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, record, False
