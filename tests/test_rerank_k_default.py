"""Real sets are re-ranked with the method card's k for them (TCL's k_test: 128 Flickr30K, 256 COCO) unless the
suite says otherwise; the built-in split keeps the suite's k."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks.runners import _zeroshot_protocols
from benchmarks.suite import load_suite
from methods import TextTokenizer, create_method
from tests.test_tcl import MICRO_TCL


def _job(sets: list[dict]) -> SimpleNamespace:
    suite = load_suite(None, {"retrieval": {"datasets": sets}})
    return SimpleNamespace(suite=suite)


def test_real_sets_take_the_cards_k(tokenizer: TextTokenizer) -> None:
    micro_tcl = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL)
    job = _job([{"name": "flickr30k", "root": "/data/f"}, {"name": "coco", "root": "/data/c"},
                {"name": "coco", "root": "/data/c2", "rerank_k": 64, "label": "coco64"}])
    got = {name: proto.rerank_k for name, (_, proto) in _zeroshot_protocols(job, micro_tcl).items()}
    assert got["zeroshot_retrieval_rerank"] == job.suite.retrieval.rerank_k     # built-in split: the suite's
    assert got["zeroshot_retrieval_rerank@flickr30k"] == 128
    assert got["zeroshot_retrieval_rerank@coco"] == 256
    assert got["zeroshot_retrieval_rerank@coco64"] == 64                       # the suite's word wins
