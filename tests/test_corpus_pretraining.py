"""A suite pretrained on a real image-caption corpus (dataset.corpus): CSV and WebDataset shards of the same pairs
train exactly as the built-in pretrain split they were exported from, and every record says what was used."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from vlpbench.benchmarks import cli
from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.data.corpora import PairFilesDataset, PairFilesLayout, write_shard
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.methods import TextTokenizer, create_method
from vlpbench.reports.store import read_evaluation, read_pretrain
from tests.conftest import MICRO_CLIP, SMALL_WORLD

JOB = Path("corpus") / "jobs" / "clip-tiny-s0"


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")   # lossless: decoded pixels equal the built-in arrays
    return buf.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, small_world: BuiltinDataset,
             tokenizer: TextTokenizer) -> Path:
    """The small world's pretrain split exported as a CSV corpus and as two WebDataset shards, plus the tests'
    tokenizer saved as a local one (so the built-in and corpus runs share a vocabulary)."""
    root = tmp_path_factory.mktemp("corpus")
    corpus = small_world.pretrain_corpus()
    images = corpus.images.get(np.arange(len(corpus)))
    (root / "img").mkdir()
    rows = []
    for i, (image, text) in enumerate(zip(images, corpus.texts)):
        (root / "img" / f"{i:04d}.png").write_bytes(_png(image))
        rows.append({"filepath": f"img/{i:04d}.png", "title": text})
    with (root / "pairs.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["filepath", "title"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "shards").mkdir()
    half = len(rows) // 2
    for shard, part in enumerate((range(half), range(half, len(rows)))):
        write_shard(root / "shards" / f"{shard:03d}.tar",
                    [(f"s{i:05d}", _png(images[i]), corpus.texts[i]) for i in part], image_ext="png")
    tokenizer.save(root / "tokenizer")
    return root


def _suite(root: Path, corpus: dict[str, Any] | None) -> dict[str, Any]:
    dataset: dict[str, Any] = {"options": SMALL_WORLD}
    if corpus is not None:
        dataset["corpus"] = {"name": "minicc", "root": str(root), "layout": {"image_size": 64, **corpus}}
    return {"name": "corpus", "methods": ["clip"], "sizes": ["tiny"], "dataset": dataset,
            "benchmarks": ["zeroshot_retrieval"],
            "tokenizer": {"kind": "pretrained", "path": str(root / "tokenizer")},
            "train": {"tiny": {"steps": 6, "batch_size": 32, "log_every": 1}},
            "method_overrides": {"clip": MICRO_CLIP}}


def _run(tmp: Path, suite: dict[str, Any], name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp / name
    assert cli.main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    return out / JOB


def _losses(job: Path) -> list[float]:
    return [json.loads(line)["loss/total"] for line in (job / "history.jsonl").read_text().splitlines()]


CSV_LAYOUT = {"files": ["pairs.csv"], "image_key": "filepath", "caption_key": "title"}
SHARD_LAYOUT = {"files": ["shards/{000..001}.tar"]}


def test_csv_and_shards_pretrain_exactly_as_the_builtin_split(exported: Path, tmp_path: Path) -> None:
    builtin = _run(tmp_path, _suite(exported, None), "builtin")
    from_csv = _run(tmp_path, _suite(exported, CSV_LAYOUT), "csv")
    from_tar = _run(tmp_path, _suite(exported, SHARD_LAYOUT), "tar")

    reference = _losses(builtin)
    assert len(reference) == 6
    assert _losses(from_csv) == pytest.approx(reference, abs=1e-6)
    assert _losses(from_tar) == pytest.approx(reference, abs=1e-6)
    zs = [read_evaluation(j / "eval" / "zeroshot_retrieval" / "results.json") for j in (builtin, from_csv, from_tar)]
    for ev in zs[1:]:
        assert ev.metrics == pytest.approx(zs[0].metrics, abs=1e-9)
        assert ev.dataset["dataset"] == "builtin" and ev.dataset["split"] == "test"   # evaluated on the built-in test

    # every record says what the model was pretrained on
    for job, fmt in ((from_csv, "csv"), (from_tar, "webdataset")):
        pre = read_pretrain(job / "pretrain.json")
        expected = PairFilesDataset("minicc", exported, PairFilesLayout(
            image_size=64, **(CSV_LAYOUT if fmt == "csv" else SHARD_LAYOUT))).pretrain_corpus().ref
        assert pre.dataset == expected.to_json()
        entry = pre.config["dataset"]["pretrain_corpus"]
        assert entry["fingerprint"] == expected.fingerprint and entry["n_pairs"] == SMALL_WORLD["n_pretrain"]
        assert entry["layout"]["files"] == (CSV_LAYOUT if fmt == "csv" else SHARD_LAYOUT)["files"]
        ev = read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json")
        assert ev.lineage[-1]["stage"] == "pretrain" and ev.lineage[-1]["dataset"]["dataset"] == "minicc"
        assert "pretrained on minicc/pretrain (6 x 32)" in ev.protocol["lineage"]
    assert "pretrain_corpus" not in read_pretrain(builtin / "pretrain.json").config["dataset"]
    assert read_pretrain(from_csv / "pretrain.json").job_fingerprint != \
        read_pretrain(from_tar / "pretrain.json").job_fingerprint


def test_a_changed_corpus_is_pretrained_again(exported: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "copy"
    root.mkdir()
    (root / "img").symlink_to(exported / "img")
    (root / "tokenizer").symlink_to(exported / "tokenizer")
    (root / "pairs.csv").write_text((exported / "pairs.csv").read_text(encoding="utf-8"), encoding="utf-8")
    suite = _suite(root, CSV_LAYOUT)
    first = _run(tmp_path, suite, "out")
    fp = read_pretrain(first / "pretrain.json").job_fingerprint
    capsys.readouterr()
    _run(tmp_path, suite, "out")
    assert "pretraining reused" in capsys.readouterr().out

    lines = (root / "pairs.csv").read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",a caption someone corrected"
    (root / "pairs.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run(tmp_path, suite, "out")
    out = capsys.readouterr().out
    assert "configuration changed since the last run: pretraining again" in out
    assert read_pretrain(first / "pretrain.json").job_fingerprint != fp


def test_the_wordpiece_tokenizer_learns_the_corpus_vocabulary(exported: Path, tmp_path: Path,
                                                             small_world: BuiltinDataset) -> None:
    from vlpbench.benchmarks.pipeline import build_tokenizer
    from vlpbench.benchmarks.suite import load_suite

    root = tmp_path / "c"
    root.mkdir()
    (root / "img").symlink_to(exported / "img")
    word = "xylophone"
    with (root / "pairs.csv").open("w", encoding="utf-8") as f:
        f.write("filepath,title\n")
        for i in range(200):
            f.write(f"img/{i:04d}.png,a {word} beside a {word}\n")
    spec = _suite(root, CSV_LAYOUT) | {"tokenizer": {"kind": "wordpiece", "vocab_size": 1000}}
    with_corpus = build_tokenizer(load_suite(None, spec), small_world)
    spec_builtin = copy.deepcopy(spec)
    del spec_builtin["dataset"]["corpus"]
    builtin_only = build_tokenizer(load_suite(None, spec_builtin), small_world)
    assert with_corpus.backend.encode(word).tokens == ["[CLS]", word, "[SEP]"]    # one whole-word token
    assert builtin_only.backend.token_to_id(word) is None and len(builtin_only.backend.encode(word).tokens) > 3


def test_a_trained_tokenizer_is_reused_in_process_until_its_corpus_or_spec_changes(
        exported: Path, tmp_path: Path, small_world: BuiltinDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlpbench.benchmarks import pipeline
    from vlpbench.benchmarks.suite import load_suite

    monkeypatch.setattr(pipeline, "_TRAINED_TOKENIZERS", {})
    trainings: list[int] = []
    train = TextTokenizer.train_wordpiece

    def counting(corpus, vocab_size=2000, **kw):  # type: ignore[no-untyped-def]
        trainings.append(vocab_size)
        return train(corpus, vocab_size, **kw)

    monkeypatch.setattr(TextTokenizer, "train_wordpiece", staticmethod(counting))
    root = tmp_path / "c"
    root.mkdir()
    (root / "img").symlink_to(exported / "img")

    def write(word: str) -> None:
        rows = "".join(f"img/{i:04d}.png,a {word} beside a {word}\n" for i in range(200))
        (root / "pairs.csv").write_text("filepath,title\n" + rows, encoding="utf-8")

    write("xylophone")
    spec = _suite(root, CSV_LAYOUT) | {"tokenizer": {"kind": "wordpiece", "vocab_size": 1000}}
    first = pipeline.build_tokenizer(load_suite(None, spec), small_world)
    again = pipeline.build_tokenizer(load_suite(None, spec), small_world)
    assert trainings == [1000]
    assert again is not first and again.backend is not first.backend   # each caller its own object
    assert again.fingerprint() == first.fingerprint() and again.source == first.source

    write("harpsichord")   # another corpus: another fingerprint, trained again
    changed = pipeline.build_tokenizer(load_suite(None, spec), small_world)
    assert trainings == [1000, 1000] and changed.backend.token_to_id("harpsichord") is not None
    smaller = pipeline.build_tokenizer(load_suite(None, spec | {"tokenizer": {"kind": "wordpiece",
                                                                             "vocab_size": 150}}), small_world)
    assert trainings == [1000, 1000, 150] and smaller.vocab_size == 150 < changed.vocab_size


def test_a_method_needing_fields_a_corpus_lacks_says_which_option_to_set(exported: Path,
                                                                         tokenizer: TextTokenizer) -> None:
    corpus = PairFilesDataset("minicc", exported, PairFilesLayout(image_size=64, **CSV_LAYOUT)).pretrain_corpus()
    model = create_method("ernie_vil2", "tiny", tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"needs 'tags', which the minicc corpus does not provide.*tags_source: "
                                         r"caption_words"):
        PretrainBatches(corpus, model, 32, seed=0)
    model = create_method("ernie_vil2", "tiny", tokenizer=tokenizer, overrides={"tags_source": "caption_words"})
    batch = PretrainBatches(corpus, model, 32, seed=0).batch(0, 0)
    assert batch.images.shape[0] == 32 and "caption_words" in batch.extras

    model = create_method("scale", "tiny", tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"needs 'audio', which the minicc corpus does not provide.*leave 'audio' "
                                         r"out of `modalities`"):
        PretrainBatches(corpus, model, 32, seed=0)
    model = create_method("scale", "tiny", tokenizer=tokenizer, overrides={"modalities": ["text", "image"]})
    batch = PretrainBatches(corpus, model, 32, seed=0).batch(0, 0)
    assert batch.images.shape[0] == 32 and batch.extras["missing"].shape == (32, 5)


def test_bad_corpus_fields_are_named_in_the_suite(tmp_path: Path) -> None:
    from vlpbench.benchmarks.suite import load_suite
    from vlpbench.methods.config import ConfigError

    spec = _suite(tmp_path, {"files": ["pairs.csv"], "caption_column": "title"})
    with pytest.raises(ConfigError, match=r"dataset\.corpus\.layout\.caption_column"):
        load_suite(None, spec)


def test_a_corpus_with_missing_images_fails_before_any_job(exported: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pairs.csv").write_text("filepath,title\nimg/0000.png,a caption\nimg/9999.png,another\n")
    (tmp_path / "img").symlink_to(exported / "img")
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(_suite(tmp_path, CSV_LAYOUT)))
    assert cli.main(["run", "--suite", str(path), "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"minicc: 1 of 2 images are missing under {tmp_path}, e.g. {tmp_path}/img/9999.png" in err
    assert not (tmp_path / "o" / "corpus" / "jobs").exists()
