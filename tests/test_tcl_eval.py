"""`vlpbench eval` and `vlpbench reproduce` end to end on a TCL checkpoint in the official retrieval layout (what
uta-smile/TCL's released fine-tuned files hold), on a Flickr30K-layout fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlpbench.benchmarks import reproduce as rp
from vlpbench.benchmarks.cli import main
from vlpbench.methods import TextTokenizer, create_method
from vlpbench.methods.card import Checkpoint, Confidence, retrieval_claim
from vlpbench.methods.checkpoints.tcl import OFFICIAL_TEXT_OPTIONS
from vlpbench.methods.tcl_checkpoint import to_official
from tests.real_fixtures import WORDS, make_flickr_retrieval


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny TCL saved as Retrieval.py saves it ({'model': retrieval layout, 'epoch'}), its vocabulary folder and
    a 12-image Flickr30K-layout test split."""
    tmp = tmp_path_factory.mktemp("tcl_eval")
    tok = TextTokenizer.train_wordpiece([" ".join(WORDS)] * 2, vocab_size=200)
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tok.with_options(**OFFICIAL_TEXT_OPTIONS),
                          overrides={"mlm_head": False}).eval()
    fusion = int(model.config.fusion_layer)
    torch.save({"model": to_official(model.state_dict(), fusion_layer=fusion, layout="retrieval"), "epoch": 9},
               tmp / "tcl_retrieval.pth")
    tok.save(tmp / "vocab")
    root = make_flickr_retrieval(tmp / "flickr", n_images=12, captions=5, seed=1)
    return {"weights": tmp / "tcl_retrieval.pth", "vocab": tmp / "vocab", "root": root, "tmp": tmp}


def _eval(released: dict[str, Path], out: Path, *protocol: str) -> dict:
    rc = main(["eval", "--weights", str(released["weights"]), "--format", "tcl", "--arch", "tiny", "--tokenizer",
               str(released["vocab"]), "--dataset", "flickr30k", "--root", str(released["root"]), "--protocol",
               "check_counts=false", *[a for p in protocol for a in ("--protocol", p)], "--output",
               str(out.parent / "outputs"), "--json", str(out), "--device", "cpu"])
    assert rc == 0
    return json.loads(out.read_text())


def test_eval_of_the_retrieval_layout_at_the_claims_protocol(released: dict[str, Path], tmp_path: Path) -> None:
    itm = _eval(released, tmp_path / "itm.json", "resolution=96", "rerank_k=5")
    proto = itm["protocol"]
    assert (proto["scoring"], proto["rerank_k"], proto["resolution"], proto["resize"]) == ("itm", 5, 96, "squash")
    assert proto["text_max_length"] == 30 and proto["resolution_changes"] and proto["score_dtype"] == "float32"
    assert itm["lineage"][0]["layout"] == "retrieval" and itm["lineage"][0]["format"] == "tcl"
    assert itm["benchmark"] == "zeroshot_retrieval_rerank@flickr30k"

    # ITC scoring of the same import equals recalls computed from the model's own embeddings by definition
    itc = _eval(released, tmp_path / "itc.json", "resolution=96", "scoring=itc")
    from vlpbench.methods.checkpoints.importer import import_checkpoint
    from vlpbench.benchmarks.data import open_dataset

    model = import_checkpoint(released["weights"], "tcl", "tiny", released["vocab"]).model
    model.set_eval_resolution(96)
    split = open_dataset("flickr30k", released["root"], {"image_size": 96}).retrieval_split("test")
    with torch.no_grad():
        img = model.encode_image(model.preprocess.eval(split.images.get(np.arange(split.n_images)))).numpy()
        txt = model.encode_text(model.tokenize(split.texts)).numpy()
    s, owner = img @ txt.T, np.asarray(split.txt2img)
    for k in (1, 5, 10):
        i2t = np.mean([(s[i] > s[i][owner == i].max()).sum() < k for i in range(len(img))]) * 100
        t2i = np.mean([(s[:, j] > s[owner[j], j]).sum() < k for j in range(len(owner))]) * 100
        assert itc["metrics"][f"i2t_R{k}"] == pytest.approx(i2t) and itc["metrics"][f"t2i_R{k}"] == pytest.approx(t2i)


def test_reproduce_a_tcl_claim_from_the_retrieval_layout(released: dict[str, Path], tmp_path: Path) -> None:
    """A test-only claim whose numbers are a first evaluation's: a second run under the claim reads reproduced."""
    first = _eval(released, tmp_path / "first.json", "resolution=96", "rerank_k=5")["metrics"]
    claim = retrieval_claim(
        "flickr30k-karpathy-test-1k", "zero-shot", "TCL tiny (fixture)",
        tuple(first[f"i2t_R{k}"] for k in (1, 5, 10)), tuple(first[f"t2i_R{k}"] for k in (1, 5, 10)),
        "a first evaluation of the fixture", Confidence.VERIFIED, id="tcl/fixture",
        checkpoint=Checkpoint(name="tcl_retrieval.pth", url="tests", format="tcl", arch="tiny"),
        resolution=96, text_max_length=30, scoring="itm", rerank_k=5, tie_policy="pessimistic", check_counts=False)
    result = rp.reproduce(claim, released["weights"], released["root"], tokenizer=released["vocab"],
                          output=tmp_path, device="cpu", n_resamples=200, method="tcl")
    assert result.record.reproduction["status"] == rp.REPRODUCED
    assert result.record.protocol["scoring"] == "itm" and result.record.protocol["rerank_k"] == 5
