"""Real sets are re-ranked with the method card's k for them (TCL's k_test: 128 Flickr30K, 256 COCO) unless the
suite says otherwise; the built-in split keeps the suite's k."""

from __future__ import annotations

from types import SimpleNamespace

from vlpbench.benchmarks.tasks.image_text import zeroshot_protocols as _zeroshot_protocols
from vlpbench.benchmarks.suite import load_suite
from vlpbench.methods import TextTokenizer, create_method
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


def test_a_real_set_is_evaluated_at_its_resolution_on_a_copy(tokenizer: TextTokenizer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vlpbench.benchmarks.tasks.image_text import at_resolution, retrieval_split as _retrieval_split
    from tests.real_fixtures import make_flickr_albef

    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL)
    root = make_flickr_albef(tmp_path / "flickr")
    job = _job([{"name": "flickr30k", "root": str(root), "resolution": 96}, {"name": "coco", "root": "/x"}])
    real, other = job.suite.retrieval.datasets
    resized = at_resolution(model, real)
    assert resized is not model and model.preprocess.config.resolution == 64        # the trained model untouched
    assert resized.preprocess.config.resolution == 96 and resized.resolution_changes
    assert resized.visual.vit.pos_embed.shape[1] == 1 + (96 // 8) ** 2 == resized.visual_m.vit.pos_embed.shape[1]
    split, how = _retrieval_split(job, real, None, resized)
    assert split.images.get([0]).shape == (1, 96, 96, 3) and "Resize((96, 96))" in how["image_decode"]
    assert at_resolution(model, other) is model and at_resolution(model, None) is model
