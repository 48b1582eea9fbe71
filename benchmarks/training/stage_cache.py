"""The cache every preparatory stage shares (unimodal init, visual tokenizer): look up, or build atomically.

A stage's output lives in `<cache_root>/<kind>/<fingerprint[:16]>` beside a JSON record holding
the full fingerprint. It is built in a temporary sibling folder and renamed into place only when
complete, so an interrupted stage is never reused; a failed build leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cached_stage(cache_root: Path, kind: str, fingerprint: str, record_file: str,
                 build: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any], bool]:
    """(folder, record, reused). `build(tmp)` writes the outputs into tmp and returns the record
    (the fingerprint is added to it); the record is written last, then the folder is published."""
    target = cache_root / kind / fingerprint[:16]
    if (target / record_file).is_file():
        record = json.loads((target / record_file).read_text())
        if record.get("fingerprint") == fingerprint:
            return target, record, True
    (cache_root / kind).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fingerprint[:16]}-", dir=cache_root / kind))
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
