"""Retrieval fine-tuning: the objectives on hand-made batches, the fine-tuning corpus, and the benchmark's lineage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from vlpbench.benchmarks.cli import main
from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.methods import PretrainBatch, StepContext, create_method, finetune_recipe, get_spec, list_methods
from vlpbench.reports.store import read_evaluation
from tests.conftest import MICRO_CLIP, SMALL_WORLD
from tests.test_tcl import MICRO_TCL

CTX = StepContext(step=0, total_steps=10, steps_per_epoch=10, epoch=0)


def _batch(model, n: int = 4, ids: list[int] | None = None) -> PretrainBatch:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    images = torch.randn(n, 3, 64, 64)
    text = model.tokenize(["a red star", "a blue circle", "a red star left", "green square"][:n])
    extras = {"image_view2": images.flip(-1)} if "image_view2" in model.data_fields else {}
    if ids is not None:
        extras["image_id"] = torch.tensor(ids)
    return PretrainBatch(images=images, text=text, index=torch.arange(n), extras=extras)


def test_default_finetune_step_is_id_aware_symmetric_infonce(micro_clip) -> None:  # type: ignore[no-untyped-def]
    batch = _batch(micro_clip, ids=[0, 1, 0, 2])     # captions 0 and 2 describe the same image
    out = micro_clip.finetune_step(batch, CTX)
    with torch.no_grad():
        img, txt = micro_clip.encode_image(batch.images), micro_clip.encode_text(batch.text)
        logits = micro_clip.logit_scale.exp() * img @ txt.t()
        pos = {0: [0, 2], 1: [1], 2: [0, 2], 3: [3]}
        i2t = -np.mean([np.mean([F.log_softmax(logits[i], 0)[j].item() for j in pos[i]]) for i in range(4)])
        t2i = -np.mean([np.mean([F.log_softmax(logits[:, i], 0)[j].item() for j in pos[i]]) for i in range(4)])
    assert out.losses["itc_i2t"].item() == pytest.approx(i2t, rel=1e-5)
    assert out.losses["itc_t2i"].item() == pytest.approx(t2i, rel=1e-5)
    assert out.total.item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    out.total.backward()
    assert all(p.grad is not None for p in micro_clip.parameters())      # the scale too: it is learnt
    # without ids each pair is its own class: plain CLIP loss
    plain = micro_clip.finetune_step(_batch(micro_clip), CTX)
    assert plain.total.item() == pytest.approx(micro_clip.pretrain_step(_batch(micro_clip), CTX).total.item(), rel=1e-5)


def test_tcl_finetune_is_ita_plus_itm_without_mlm_and_unclamped_temp(tokenizer) -> None:  # type: ignore[no-untyped-def]
    tcl = create_method("tcl", "tiny", tokenizer=tokenizer, overrides={**MICRO_TCL, "queue_size": 8})
    with torch.no_grad():
        tcl.temp.fill_(0.9)                           # outside the pretraining clamp range [0.001, 0.5]
    out = tcl.finetune_step(_batch(tcl, ids=[3, 3, 5, 6]), CTX)
    assert "mlm" not in out.losses and out.total.item() == pytest.approx(
        (out.losses["ita"] + out.losses["itm"]).item(), rel=1e-6)
    assert tcl.temp.item() == pytest.approx(0.9)
    assert {3, 5, 6} <= set(tcl.queues.get("ids").tolist())        # the queue holds image ids (idx_queue)
    pre = tcl.pretrain_step(_batch(tcl, ids=[3, 3, 5, 6]), CTX)
    assert "mlm" in pre.losses and tcl.temp.item() == pytest.approx(0.5)


def test_every_method_has_a_finetune_recipe_with_a_source() -> None:
    for name in list_methods():
        for size in ("tiny", "base"):
            r = finetune_recipe(name, size)
            assert r.lr > 0 and r.source, (name, size)
        assert get_spec(name).finetune_recipes["base"]["lr"] <= get_spec(name).recipes["base"]["lr"]
    assert finetune_recipe("tcl", "base").lr == 1e-5 and finetune_recipe("tcl", "base").warmup_steps == 0
    assert finetune_recipe("ernie_vil2", "base").lr == 5e-5 and finetune_recipe("ernie_vil2", "base").warmup_steps == 100


def test_finetune_corpus_has_one_row_per_caption_with_its_image(small_world: BuiltinDataset) -> None:
    corpus = small_world.finetune_corpus("train")
    recs = small_world.records("train")
    assert len(corpus) == sum(len(r["captions"]) for r in recs)
    ids = corpus.extras["image_id"]
    k = int(np.flatnonzero(ids == 7)[0])
    assert corpus.texts[k] == recs[7]["captions"][0]
    assert np.array_equal(corpus.images.get([k])[0], small_world.images("train").get([7])[0])


def test_finetuned_retrieval_benchmark_records_its_lineage_and_reuses(tmp_path: Path, cache_root: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    suite = {"name": "ft", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
             "benchmarks": ["zeroshot_retrieval", "finetuned_retrieval"],
             "train": {"tiny": {"steps": 3, "batch_size": 16, "log_every": 1}},
             "finetune": {"budget": {"tiny": {"steps": 4, "batch_size": 16, "log_every": 2}}},
             "method_overrides": {"clip": MICRO_CLIP}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    job = out / "ft" / "jobs" / "clip-tiny-s0"
    ft = read_evaluation(job / "eval" / "finetuned_retrieval" / "results.json")
    zs = read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json")
    assert ft.protocol["setting"] == "fine-tuned" and zs.protocol["setting"] == "zero-shot"
    assert [e["stage"] for e in ft.lineage] == ["pretrain", "finetune"]
    assert ft.lineage[1]["dataset"]["split"] == "train" and ft.lineage[1]["steps"] == 4
    assert ft.protocol["lineage"].endswith("-> fine-tuned on builtin/train (4 x 16)")
    assert "CPU-scale" in ft.protocol["finetune_recipe"] and ft.dataset["split"] == "test"
    history = [json.loads(line) for line in (job / "finetune" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 4 and "loss/itc_i2t" in history[-1]
    assert ft.metrics != zs.metrics
    pre_model = (job / "model" / "model.safetensors").read_bytes()
    assert pre_model != (job / "finetune" / "model" / "model.safetensors").read_bytes()
    stamp = (job / "finetune" / "model" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    assert (job / "finetune" / "model" / "model.safetensors").stat().st_mtime_ns == stamp   # reused, not retrained
    assert (job / "model" / "model.safetensors").read_bytes() == pre_model
    report = (out / "ft" / "report.md").read_text()
    assert "## Fine-tuned image-text retrieval (ITC) — builtin/test" in report


def test_finetuning_on_a_real_karpathy_set(tmp_path: Path, cache_root: Path) -> None:
    from tests.real_fixtures import make_flickr_albef

    flickr = make_flickr_albef(tmp_path / "flickr")
    suite = {"name": "ftreal", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
             "benchmarks": ["finetuned_retrieval"], "train": {"tiny": {"steps": 2, "batch_size": 16, "log_every": 1}},
             "finetune": {"budget": {"tiny": {"steps": 2, "batch_size": 4, "log_every": 1}},
                          "dataset": {"name": "flickr30k", "root": str(flickr)}},
             "method_overrides": {"clip": MICRO_CLIP}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    ev = read_evaluation(out / "ftreal" / "jobs" / "clip-tiny-s0" / "eval" / "finetuned_retrieval" / "results.json")
    assert ev.dataset["dataset"] == "flickr30k" and ev.dataset["split"] == "karpathy-test"
    assert ev.lineage[-1]["stage"] == "finetune" and ev.lineage[-1]["dataset"]["split"] == "karpathy-train"
    assert ev.protocol["lineage"].endswith("-> fine-tuned on flickr30k/karpathy-train (2 x 4)")
    assert ev.protocol["annotation_format"] == "albef" and ev.protocol["n_texts"] == 9
    (flickr / "flickr30k_train.json").unlink()
    assert main(["run", "--suite", str(path), "--output", str(tmp_path / "out2"), "--no-progress"]) == 2


def test_a_fine_tuned_model_on_another_set_is_labelled_a_transfer(tmp_path: Path, cache_root: Path) -> None:
    """TCL/ALBEF's "zero-shot Flickr30K" is the COCO-fine-tuned model: runnable, and never called zero-shot."""
    from tests.real_fixtures import make_coco_karpathy, make_flickr_albef

    flickr, coco = make_flickr_albef(tmp_path / "flickr"), make_coco_karpathy(tmp_path / "coco")
    suite = {"name": "transfer", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
             "benchmarks": ["finetuned_retrieval"], "train": {"tiny": {"steps": 2, "batch_size": 16, "log_every": 1}},
             "finetune": {"budget": {"tiny": {"steps": 2, "batch_size": 2, "log_every": 1}},
                          "dataset": {"name": "coco", "root": str(coco)}},
             "retrieval": {"datasets": [{"name": "flickr30k", "root": str(flickr)}]},
             "method_overrides": {"clip": MICRO_CLIP}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    evals = out / "transfer" / "jobs" / "clip-tiny-s0" / "eval"
    own = read_evaluation(evals / "finetuned_retrieval" / "results.json")
    transfer = read_evaluation(evals / "finetuned_retrieval@flickr30k" / "results.json")
    assert own.protocol["setting"] == "fine-tuned" and own.dataset["dataset"] == "coco"
    assert transfer.protocol["setting"] == "transfer: fine-tuned on coco/karpathy-train"
    assert transfer.dataset["dataset"] == "flickr30k" and transfer.protocol["split"] == "flickr30k/karpathy-test"
    assert transfer.protocol["lineage"].endswith("-> fine-tuned on coco/karpathy-train (2 x 2)")
    assert transfer.lineage == own.lineage


def test_finetune_command_fine_tunes_what_run_pretrained(tmp_path: Path, cache_root: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`vlpbench finetune`: the suite's fine-tuned benchmark alone, on the pretraining `vlpbench run` left;
    the command line's Karpathy set and budget enter the fine-tuning (and its lineage), the pretraining is
    reused untouched, and a missing pretraining is an error that says what to run."""
    from tests.real_fixtures import make_flickr_albef

    suite = {"name": "ftcli", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
             "benchmarks": ["zeroshot_retrieval"], "train": {"tiny": {"steps": 2, "batch_size": 16, "log_every": 1}},
             "method_overrides": {"clip": MICRO_CLIP}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    assert main(["finetune", "--suite", str(path), "--output", str(out), "--no-progress"]) == 2
    assert "pretraining record" in capsys.readouterr().err
    assert main(["finetune", "--suite", str(path), "--output", str(out), "--dataset", "coco"]) == 2
    assert "--dataset and --root go together" in capsys.readouterr().err

    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    job = out / "ftcli" / "jobs" / "clip-tiny-s0"
    pre_model = (job / "model" / "model.safetensors").read_bytes()
    assert not (job / "eval" / "finetuned_retrieval").exists()
    flickr = make_flickr_albef(tmp_path / "flickr")
    assert main(["finetune", "--suite", str(path), "--output", str(out), "--dataset", "flickr30k",
                 "--root", str(flickr), "--steps", "3", "--batch-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "pretraining reused" in printed and "finetuned_retrieval: RSUM" in printed
    ev = read_evaluation(job / "eval" / "finetuned_retrieval" / "results.json")
    assert ev.dataset["dataset"] == "flickr30k" and ev.protocol["setting"] == "fine-tuned"
    assert ev.protocol["lineage"].endswith("-> fine-tuned on flickr30k/karpathy-train (3 x 4)")
    assert (job / "model" / "model.safetensors").read_bytes() == pre_model
    assert (job / "eval" / "zeroshot_retrieval" / "results.json").is_file()    # the run's other records stay
    assert "Fine-tuned image-text retrieval" in (out / "ftcli" / "report.md").read_text()
