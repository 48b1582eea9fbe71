"""Claims as runnable reproduction specs: every card's claims listed, the verdict logic on a fixture whose "claimed"
numbers come from the reference implementation, and the verdict reaching the record, MLflow and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlpbench.benchmarks import reproduce as rp
from vlpbench.benchmarks.cli import main
from vlpbench.methods import get_spec, list_methods
from vlpbench.methods.card import Checkpoint, ClaimedResult, Confidence, retrieval_claim
from vlpbench.reports.comparison import NO_WEIGHTS, compare
from vlpbench.reports.store import read_evaluation
from tests.real_fixtures import make_flickr_retrieval

open_clip = pytest.importorskip("open_clip", reason="open_clip_torch (the dev extra) is the reference")

SMALL = dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8, head_width=16),
             text_cfg=dict(context_length=77, vocab_size=49408, width=48, heads=3, layers=2))
ARCH = "ViT-Small-test-quickgelu"


def test_every_claim_of_every_card_is_a_spec(capsys: pytest.CaptureFixture[str]) -> None:
    claims = rp.all_claims()
    assert {m for m, _ in claims} == set(list_methods())
    ids = [c.id for _, c in claims]
    assert len(set(ids)) == len(ids) and all(ids)
    for method, c in claims:
        assert c.id.startswith(f"{method}/"), c.id
        assert c.reproducible != bool(c.no_weights), c.id           # weights named, or why there are none
        if c.reproducible and c.benchmark == "image_text_retrieval":
            assert c.checkpoint is not None and c.checkpoint.url
            assert {"resolution", "text_max_length", "scoring", "tie_policy"} <= set(c.protocol), c.id
            if c.protocol["scoring"] != "itc":
                assert c.protocol["rerank_k"] in (128, 256), c.id
    unreleased = {c.id for _, c in claims if not c.reproducible}
    assert {i for i in ids if i.startswith(("cots/", "scale/"))} <= unreleased
    assert "ernie_vil2/flickr30k-zeroshot-en" in unreleased
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(i in out for i in ids)
    assert out.count(NO_WEIGHTS) == len(unreleased)


def test_clip_paper_claims_use_the_prompt_on_the_text_side_at_336() -> None:
    paper = [c for c in get_spec("clip").card.claimed if c.model == "ViT-L/14@336px"]
    assert len(paper) == 2
    for c in paper:
        assert (c.protocol["prompt"], c.protocol["prompt_side"], c.protocol["resolution"]) == ("a photo of", "text", 336)
        assert c.checkpoint.sha256 == "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"
        assert c.checkpoint.format == "openai" and c.checkpoint.arch == "ViT-L-14-336-quickgelu"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small open_clip model trained on the fixture itself (so retrieval is far above chance), its state dict,
    a perturbed copy, the fixture and the arch config folder."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("reproduce")
    root = make_flickr_retrieval(tmp / "flickr", n_images=32, captions=5, seed=3)
    recs = json.loads((root / "flickr30k_test.json").read_text())
    pre = open_clip.image_transform(32, is_train=False)
    images = torch.stack([pre(Image.open(root / r["image"])) for r in recs])
    caps = [c for r in recs for c in r["caption"]]
    owner = torch.as_tensor(np.repeat(np.arange(len(recs)), 5))
    tokens = open_clip.tokenize(caps)
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**SMALL, quick_gelu=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(120):
        pick = torch.as_tensor(np.random.default_rng(step).permutation(len(caps))[:32])
        img = model.encode_image(images[owner[pick]], normalize=True)
        txt = model.encode_text(tokens[pick], normalize=True)
        logits = model.logit_scale.exp() * img @ txt.t()
        same = (owner[pick][:, None] == owner[pick][None, :]).float()
        loss = -(torch.log_softmax(logits, 1) * same / same.sum(1, keepdim=True)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        img = model.encode_image(images, normalize=True).numpy()
        txt = model.encode_text(tokens, normalize=True).numpy()
    torch.save(model.state_dict(), tmp / "trained.pt")
    noisy = {k: v + 0.5 * v.std() * torch.randn_like(v) if v.ndim > 1 else v for k, v in model.state_dict().items()}
    torch.save(noisy, tmp / "perturbed.pt")
    (tmp / "configs").mkdir()
    (tmp / "configs" / "ViT-Small-test.json").write_text(json.dumps(SMALL))
    (tmp / "claimed.json").write_text(json.dumps(_reference_recalls(img, txt, owner.numpy())))
    return {"root": root, "trained": tmp / "trained.pt", "perturbed": tmp / "perturbed.pt",
            "configs": tmp / "configs", "claimed": tmp / "claimed.json"}


def _reference_recalls(img: np.ndarray, txt: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    s = img @ txt.T
    out = {}
    for k in (1, 5, 10):
        out[f"i2t_R{k}"] = 100 * float(np.mean([np.isin(np.argsort(-s[i])[:k], np.where(owner == i)[0]).any()
                                                for i in range(len(img))]))
        out[f"t2i_R{k}"] = 100 * float(np.mean([owner[j] in np.argsort(-s[:, j])[:k] for j in range(s.shape[1])]))
    return out


def _claim(claimed: dict[str, float]) -> ClaimedResult:
    """A test-only claim whose numbers the reference implementation computed on the fixture."""
    i2t = tuple(claimed[f"i2t_R{k}"] for k in (1, 5, 10))
    t2i = tuple(claimed[f"t2i_R{k}"] for k in (1, 5, 10))
    return retrieval_claim("flickr30k-karpathy-test-1k", "zero-shot", "small open_clip (fixture)", i2t, t2i,
                           "computed by open_clip on the fixture", Confidence.VERIFIED, id="clip/fixture",
                           checkpoint=Checkpoint(name="trained.pt", url="tests", format="open_clip", arch=ARCH),
                           tolerance=1.0, resolution=32, text_max_length=77, scoring="itc",
                           tie_policy="pessimistic", check_counts=False)


def test_verdict_reads_reproduced_then_not_reproduced_with_perturbed_weights(
        trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vlpbench.methods.checkpoints.clip.open_clip_config_dir", lambda: trained["configs"])
    claimed = json.loads(trained["claimed"].read_text())
    assert claimed["i2t_R1"] > 40 and claimed["t2i_R1"] > 15      # far from chance (R@1 about 3 %)
    claim = _claim(claimed)
    good = rp.reproduce(claim, trained["trained"], trained["root"], output=tmp_path, device="cpu", n_resamples=500)
    verdict = good.record.reproduction
    assert verdict["status"] == rp.REPRODUCED and not verdict["not_reproduced"]
    for metric, want in claimed.items():
        assert verdict["metrics"][metric]["ours"] == pytest.approx(want, abs=1e-9)
    # written atomically with the verdict, and the protocol says which claim
    stored = read_evaluation(good.record_path)
    assert stored.reproduction == verdict and stored.protocol["claim"] == "clip/fixture"
    assert stored.protocol["weights_sha256"] == stored.lineage[0]["sha256"]

    bad = rp.reproduce(claim, trained["perturbed"], trained["root"], output=tmp_path, name="perturbed",
                       device="cpu", n_resamples=500)
    worse = bad.record.reproduction
    assert worse["status"] == rp.NOT_REPRODUCED and "i2t_R1" in worse["not_reproduced"]
    assert bad.record.metrics["i2t_R1"] < claimed["i2t_R1"] - 10

    # the report's comparison takes the verdict of the claim's own record
    claim_json = {**json.loads(json.dumps(claim, default=lambda o: o.__dict__)), "confidence": "V"}
    rows = compare(claim_json, "clip", [stored], lambda r: None)
    assert {r.status for r in rows} == {"reproduced"} and rows[0].record.endswith(stored.benchmark)


def test_published_sha256_guards_the_weights(trained: dict[str, Path], tmp_path: Path) -> None:
    from vlpbench.methods.towers import WeightsError

    claim = next(c for c in get_spec("clip").card.claimed if c.id == "clip/flickr30k-zeroshot")
    with pytest.raises(WeightsError, match="is not ViT-L-14-336px.pt"):
        rp.reproduce(claim, trained["trained"], trained["root"], output=tmp_path, device="cpu")
    assert main(["reproduce", "clip/flickr30k-zeroshot", "--weights", str(trained["trained"]), "--root",
                 str(trained["root"]), "--output", str(tmp_path)]) == 2


def test_unreleased_claims_are_not_reproducible_rather_than_not_comparable(tmp_path: Path) -> None:
    card = get_spec("cots").card.to_json()
    rows = compare(card["claimed"][0], "cots", [], lambda r: None)
    assert {r.status for r in rows} == {NO_WEIGHTS}
    assert "neither code nor weights" in rows[0].reason
    with pytest.raises(Exception, match="no released weights"):
        rp.reproduce(get_spec("cots").card.claimed[0], tmp_path, None)


def test_reproduce_cli_logs_the_verdict_to_mlflow(trained: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdict reaches MLflow as tags of the evaluation run (the CLI's path: record first, then the log)."""
    from vlpbench.reports import tracking

    monkeypatch.setattr("vlpbench.methods.checkpoints.clip.open_clip_config_dir", lambda: trained["configs"])
    claim = _claim(json.loads(trained["claimed"].read_text()))
    result = rp.reproduce(claim, trained["trained"], trained["root"], output=tmp_path, device="cpu",
                          n_resamples=200)
    uri = tracking.resolve_tracking_uri(None, tmp_path)
    run_id = tracking.log_evaluation(result.record_path, tmp_path / "reproduce", uri, "vlpbench-reproduce")
    assert tracking.log_evaluation(result.record_path, tmp_path / "reproduce", uri, "vlpbench-reproduce") == run_id
    run = tracking.mlflow_client(uri).get_run(run_id)
    assert run.data.tags["vlpbench.claim"] == "clip/fixture"
    assert run.data.tags["vlpbench.reproduction"] == "reproduced"
    assert run.data.metrics["i2t_R1"] == pytest.approx(result.record.metrics["i2t_R1"])


def test_report_shows_the_verdict_and_other_weights_as_not_comparable(
        trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import asdict

    from vlpbench.reports import sources
    from vlpbench.reports.build import build_report
    from vlpbench.reports.store import write_record

    monkeypatch.setattr("vlpbench.methods.checkpoints.clip.open_clip_config_dir", lambda: trained["configs"])
    claim = _claim(json.loads(trained["claimed"].read_text()))
    result = rp.reproduce(claim, trained["trained"], trained["root"], output=tmp_path, device="cpu",
                          n_resamples=200)
    card = dict(result.record.card)     # the test claim joins the card copied into the record
    card["claimed"] = [*card["claimed"], {**asdict(claim), "confidence": claim.confidence.value}]
    write_record(result.record_path, result.record.model_copy(update={"card": card}))
    files = build_report(sources.from_folder(tmp_path / "reproduce"), tmp_path / "report", title="t")
    section = files.markdown.read_text().split("Claimed vs reproduced")[1]
    row = next(line for line in section.splitlines() if "small open_clip (fixture)" in line)
    assert "**reproduced**" in row and "released weights, claim's protocol" in row
    paper = next(line for line in section.splitlines() if "ViT-L/14@336px" in line and "flickr30k" in line)
    assert "**not comparable**" in paper and "weights: trained.pt" in paper


def test_tcl_zero_shot_flickr_is_the_coco_fine_tuned_checkpoint_at_384_with_k_128() -> None:
    claims = {c.id: c for c in get_spec("tcl").card.claimed}
    flickr, coco = claims["tcl/flickr30k-zeroshot"], claims["tcl/coco-zeroshot"]
    assert flickr.checkpoint.name == "TCL_Retrieval_Coco_Finetune.pth" and coco.checkpoint.name == "TCL_4M.pth"
    assert (flickr.protocol["rerank_k"], coco.protocol["rerank_k"]) == (128, 256)
    for c in claims.values():
        assert (c.protocol["resolution"], c.protocol["text_max_length"], c.protocol["scoring"]) == (384, 30, "itm")
        assert rp.claim_protocol(c)["rerank_k"] == c.protocol["rerank_k"]


def test_reproduce_command_end_to_end(trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`vlpbench reproduce CLAIM` as a user types it (the fixture claim stands in for a card's): record, MLflow run,
    --json with the verdict, the status printed."""
    monkeypatch.setattr("vlpbench.methods.checkpoints.clip.open_clip_config_dir", lambda: trained["configs"])
    claim = _claim(json.loads(trained["claimed"].read_text()))
    monkeypatch.setattr(rp, "get_claim", lambda claim_id: ("clip", claim))
    out = tmp_path / "verdict.json"
    assert main(["reproduce", "clip/fixture", "--weights", str(trained["trained"]), "--root", str(trained["root"]),
                 "--output", str(tmp_path), "--device", "cpu", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["reproduction"]["status"] == "reproduced" and got["protocol"]["claim"] == "clip/fixture"
    assert "clip/fixture: reproduced" in capsys.readouterr().out
