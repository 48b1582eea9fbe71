"""Loaders of real dataset formats on generated fixtures, good and broken, and `vlpbench data verify`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from vlpbench.benchmarks.cli import main
from vlpbench.benchmarks.data import DatasetError, open_dataset
from vlpbench.benchmarks.data.corpora import PairFilesDataset, PairFilesLayout, expand_braces, write_shard
from vlpbench.benchmarks.data.files import sha256_file
from vlpbench.benchmarks.data.karpathy import KarpathyDataset, KarpathyLayout
from vlpbench.benchmarks.data.msrvtt import MSRVTTDataset, MSRVTTLayout
from vlpbench.benchmarks.data.verify import MANIFEST_DIR, load_manifest, verify
from vlpbench.benchmarks.data.video import decode_video, uniform_frame_indices
from tests.real_fixtures import (FLICKR_TEST, FLICKR_TRAIN, MSRVTT_FRAMES, MSRVTT_TEST, MSRVTT_TRAIN9K,
                                 image_red, make_coco_karpathy, make_flickr_albef, make_flickr_karpathy, make_msrvtt,
                                 write_jpeg)


def _red(images: np.ndarray) -> list[int]:
    return [int(round(float(im[..., 0].mean()))) for im in images]


# --- Flickr30K / COCO (Karpathy split) ----------------------------------------------------------

def test_flickr_albef_test_split_flattens_captions_in_order(tmp_path: Path) -> None:
    ds = open_dataset("flickr30k", make_flickr_albef(tmp_path), {"image_size": 16})
    split = ds.retrieval_split("test")
    assert ds.format == "albef"
    assert split.texts == FLICKR_TEST["100.jpg"] + FLICKR_TEST["101.jpg"]
    assert split.txt2img.tolist() == [0] * 5 + [1] * 4          # never assume 5 captions per image
    assert split.captions_per_image() == {"min": 4, "max": 5, "mean": 4.5}
    images = split.images.get([1, 0])
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    assert np.allclose(_red(images), [image_red(1), image_red(0)], atol=3)
    assert split.ref.split == "karpathy-test" and len(split.ref.fingerprint) == 64


def test_flickr_albef_train_groups_per_caption_records_by_image(tmp_path: Path) -> None:
    ds = KarpathyDataset("flickr30k", make_flickr_albef(tmp_path), KarpathyLayout(image_size=16))
    corpus = ds.pretrain_corpus("train")
    assert list(corpus.texts) == [c for caps in FLICKR_TRAIN.values() for c in caps]
    assert corpus.extras["image_id"].tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.retrieval_split("train").n_images == 3


def test_karpathy_format_gives_the_same_split_as_albef(tmp_path: Path) -> None:
    albef = KarpathyDataset("flickr30k", make_flickr_albef(tmp_path / "a")).retrieval_split("test")
    kar_ds = KarpathyDataset("flickr30k", make_flickr_karpathy(tmp_path / "k"))
    kar = kar_ds.retrieval_split("test")
    assert kar_ds.format == "karpathy"
    assert kar.texts == albef.texts and kar.txt2img.tolist() == albef.txt2img.tolist()
    # The split's fingerprint is of its annotation file, so the two formats are told apart in results.
    assert kar.ref.fingerprint != albef.ref.fingerprint


def test_coco_karpathy_restval_joins_train_and_filepath_is_used(tmp_path: Path) -> None:
    root = make_coco_karpathy(tmp_path)
    with_restval = KarpathyDataset("coco", root)
    assert [it.image for it in with_restval.items("train")] == ["train2014/COCO_train2014_3.jpg",
                                                                "val2014/COCO_val2014_4.jpg"]
    without = KarpathyDataset("coco", root, KarpathyLayout(train_includes_restval=False))
    assert [it.image for it in without.items("train")] == ["train2014/COCO_train2014_3.jpg"]
    assert with_restval.ref("train").fingerprint != without.ref("train").fingerprint
    test = with_restval.retrieval_split("test")
    assert test.n_texts == 6 and test.n_images == 1   # six captions kept: COCO images may have more than five


def test_missing_annotation_file_names_the_candidates(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path)
    (root / "flickr30k_val.json").unlink()
    ds = KarpathyDataset("flickr30k", root)
    with pytest.raises(DatasetError, match=r"flickr30k val: no annotation file flickr30k_val\.json in .*data\.tar\.gz"):
        ds.retrieval_split("val")
    assert ds.available_splits() == ["train", "test"]


def test_truncated_json_names_the_file_and_position(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path)
    path = root / "flickr30k_test.json"
    path.write_text(path.read_text()[:57])
    with pytest.raises(DatasetError, match=r"flickr30k_test\.json: not valid JSON \(line 1, column \d+: .*truncated"):
        KarpathyDataset("flickr30k", root).retrieval_split("test")


def test_empty_caption_list_names_the_record_and_image(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path)
    recs = json.loads((root / "flickr30k_test.json").read_text())
    recs[1]["caption"] = []
    (root / "flickr30k_test.json").write_text(json.dumps(recs))
    with pytest.raises(DatasetError, match=r"flickr30k_test\.json: record 1 \(flickr30k-images/101\.jpg\): an empty "
                                           r"caption list"):
        KarpathyDataset("flickr30k", root).retrieval_split("test")


def test_missing_image_is_reported_when_the_split_opens(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path)
    (root / "flickr30k-images" / "101.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 images are missing under .*, e\.g\. .*flickr30k-images/101\.jpg"):
        KarpathyDataset("flickr30k", root).retrieval_split("test")


def test_albef_subfolder_trap_is_named(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path / "flickr")
    inner = root / "flickr30k-images"
    shutil.copy(root / "flickr30k_test.json", inner / "flickr30k_test.json")
    with pytest.raises(DatasetError, match=rf"points inside that folder \(ALBEF #136\): set the root .* to {root}"):
        KarpathyDataset("flickr30k", inner).retrieval_split("test")
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(root / "flickr30k_test.json", flat)
    for p in inner.glob("*.jpg"):
        shutil.copy(p, flat)
    with pytest.raises(DatasetError, match=r"lie directly in .* move them into .*flickr30k-images/"):
        KarpathyDataset("flickr30k", flat).retrieval_split("test")


def test_unreadable_image_names_the_file_on_decode(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path)
    (root / "flickr30k-images" / "101.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    split = KarpathyDataset("flickr30k", root).retrieval_split("test")
    split.images.get([0])
    with pytest.raises(DatasetError, match=r"101\.jpg: cannot decode the image"):
        split.images.get([1])


def test_wrong_format_says_which_option_to_set(tmp_path: Path) -> None:
    root = make_flickr_karpathy(tmp_path)
    with pytest.raises(DatasetError, match=r"expected a JSON list .* set dataset\.layout\.format: karpathy"):
        KarpathyDataset("flickr30k", root, KarpathyLayout(format="albef",
                                                          annotations={"test": "annotations/dataset_flickr30k.json"})
                        ).retrieval_split("test")


# --- pair corpora ---------------------------------------------------------------------------------

def _jpeg_bytes(tmp: Path, red: int) -> bytes:
    p = tmp / f"tmp_{red}.jpg"
    write_jpeg(p, red)
    return p.read_bytes()


def test_csv_tsv_and_jsonl_corpora(tmp_path: Path) -> None:
    for i in range(3):
        write_jpeg(tmp_path / "img" / f"{i}.jpg", image_red(i))
    (tmp_path / "pairs.csv").write_text('filepath,title\nimg/0.jpg,"a red, square thing"\nimg/2.jpg,third\n')
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\nimg/1.jpg\tsecond\n")
    (tmp_path / "pairs.jsonl").write_text('{"image": "img/2.jpg", "caption": "two"}\n\n{"image": "img/0.jpg", '
                                          '"caption": "zero"}\n')
    csv = PairFilesDataset("cc", tmp_path, PairFilesLayout(files=["pairs.csv", "pairs.tsv"], image_key="filepath",
                                                          caption_key="title", image_size=16)).pretrain_corpus()
    assert list(csv.texts) == ["a red, square thing", "third", "second"]
    assert np.allclose(_red(csv.images.get([0, 1, 2])), [image_red(0), image_red(2), image_red(1)], atol=3)
    jsonl = open_dataset("pairs", tmp_path, {"files": ["*.jsonl"], "name": "mini"}).pretrain_corpus()
    assert list(jsonl.texts) == ["two", "zero"] and jsonl.ref.dataset == "mini"
    assert jsonl.ref.fingerprint != csv.ref.fingerprint


def test_corpus_errors_name_file_line_and_field(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", 5)
    (tmp_path / "bad.csv").write_text("image,text\na.jpg,hello\n")
    with pytest.raises(DatasetError, match=r"bad\.csv: no column 'caption' \(dataset\.layout\.caption_key\); the "
                                           r"header has \['image', 'text'\]"):
        PairFilesDataset("c", tmp_path, PairFilesLayout(files=["bad.csv"])).pretrain_corpus()
    (tmp_path / "empty.csv").write_text("image,caption\na.jpg,hello\na.jpg,  \n")
    with pytest.raises(DatasetError, match=r"empty\.csv:3: empty caption"):
        PairFilesDataset("c", tmp_path, PairFilesLayout(files=["empty.csv"])).pretrain_corpus()
    (tmp_path / "gone.jsonl").write_text('{"image": "nope.jpg", "caption": "x"}\n')
    with pytest.raises(DatasetError, match=r"1 of 1 images are missing .*nope\.jpg"):
        PairFilesDataset("c", tmp_path, PairFilesLayout(files=["gone.jsonl"])).pretrain_corpus()
    with pytest.raises(DatasetError, match=r"shards/\*\.tar: no file matches"):
        PairFilesDataset("c", tmp_path, PairFilesLayout(files=["shards/*.tar"]))


def test_webdataset_shards_by_brace_pattern(tmp_path: Path) -> None:
    assert expand_braces("s/{008..010}.tar") == ["s/008.tar", "s/009.tar", "s/010.tar"]
    assert expand_braces("{a,b}-{0..1}") == ["a-0", "a-1", "b-0", "b-1"]
    (tmp_path / "s").mkdir()
    write_shard(tmp_path / "s" / "000.tar", [("k0", _jpeg_bytes(tmp_path, image_red(0)), "zero"),
                                             ("dir/k1", _jpeg_bytes(tmp_path, image_red(1)), "one ")])
    write_shard(tmp_path / "s" / "001.tar", [("k2", _jpeg_bytes(tmp_path, image_red(2)), "two")])
    corpus = open_dataset("pairs", tmp_path, {"files": ["s/{000..001}.tar"], "image_size": 16}).pretrain_corpus()
    assert list(corpus.texts) == ["zero", "one", "two"]
    assert np.allclose(_red(corpus.images.get([2, 0, 1])), [image_red(2), image_red(0), image_red(1)], atol=3)


def test_webdataset_broken_shards(tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    write_shard(good, [("k0", _jpeg_bytes(tmp_path, 5), "zero")])
    data = good.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:700])
    with pytest.raises(DatasetError, match=r"cut\.tar: not a readable tar shard .*truncated"):
        PairFilesDataset("w", tmp_path, PairFilesLayout(files=["cut.tar"])).pretrain_corpus()
    import io
    import tarfile
    with tarfile.open(tmp_path / "nocap.tar", "w") as tar:
        info = tarfile.TarInfo("k9.jpg")
        payload = _jpeg_bytes(tmp_path, 7)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetError, match=r"nocap\.tar: sample 'k9' has no caption \(\.txt or \.json\); it has "
                                           r"\['jpg'\]"):
        PairFilesDataset("w", tmp_path, PairFilesLayout(files=["nocap.tar"])).pretrain_corpus()


def test_parquet_corpora_with_embedded_images_binary_and_paths(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Parquet through HF datasets: the Hub's Image feature (bytes embedded), plain binary and path columns, rows
    in file order across files, the same pixels as the JPEG files they came from."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, Features, Image, Value

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    jpegs = [_jpeg_bytes(tmp_path, image_red(i)) for i in range(4)]
    feats = Features({"image": Image(), "text": Value("string")})
    Dataset.from_dict({"image": [{"bytes": jpegs[0], "path": None}, {"bytes": jpegs[1], "path": None}],
                       "text": ["zero ", "one"]}, features=feats).to_parquet(str(tmp_path / "a-0.parquet"))
    pq.write_table(pa.table({"image": pa.array([jpegs[2]], pa.binary()), "text": ["two"]}), tmp_path / "a-1.parquet")
    write_jpeg(tmp_path / "img" / "3.jpg", image_red(3))
    pq.write_table(pa.table({"image": ["3.jpg"], "text": ["three"]}), tmp_path / "a-2.parquet")
    layout = {"files": ["a-{0..2}.parquet"], "image_key": "image", "caption_key": "text", "image_size": 16,
              "image_root": "img"}
    corpus = open_dataset("pairs", tmp_path, layout).pretrain_corpus()
    assert list(corpus.texts) == ["zero", "one", "two", "three"] and len(corpus.images) == 4
    assert np.allclose(_red(corpus.images.get([3, 0, 2, 1])), [image_red(3), image_red(0), image_red(2),
                                                               image_red(1)], atol=3)
    csv_twin = tmp_path / "twin"
    for i in range(2):
        (csv_twin / "img").mkdir(parents=True, exist_ok=True)
        (csv_twin / "img" / f"{i}.jpg").write_bytes(jpegs[i])
    (csv_twin / "pairs.csv").write_text("image,caption\nimg/0.jpg,zero\nimg/1.jpg,one\n")
    twin = open_dataset("pairs", csv_twin, {"files": ["pairs.csv"], "image_size": 16}).pretrain_corpus()
    assert np.array_equal(twin.images.get([0, 1]), corpus.images.get([0, 1]))   # decoded exactly alike
    assert corpus.ref.fingerprint != open_dataset("pairs", tmp_path, {**layout, "files": ["a-0.parquet"]}
                                                  ).pretrain_corpus().ref.fingerprint


def test_parquet_corpus_errors_name_file_row_and_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    pq.write_table(pa.table({"url": ["x.jpg"], "caption": ["hello"]}), tmp_path / "nocol.parquet")
    with pytest.raises(DatasetError, match=r"nocol\.parquet: no column 'image' \(dataset\.layout\.image_key\); the "
                                           r"file has \['url', 'caption'\]"):
        PairFilesDataset("p", tmp_path, PairFilesLayout(files=["nocol.parquet"])).pretrain_corpus()
    pq.write_table(pa.table({"image": ["x.jpg", "y.jpg"], "caption": ["hello", " "]}), tmp_path / "blank.parquet")
    with pytest.raises(DatasetError, match=r"blank\.parquet: row 1: empty caption in 'caption'"):
        PairFilesDataset("p", tmp_path, PairFilesLayout(files=["blank.parquet"])).pretrain_corpus()
    pq.write_table(pa.table({"image": [1, 2], "caption": ["a", "b"]}), tmp_path / "ints.parquet")
    with pytest.raises(DatasetError, match=r"ints\.parquet: column 'image' is .*int64.*image_key must name"):
        PairFilesDataset("p", tmp_path, PairFilesLayout(files=["ints.parquet"])).pretrain_corpus()
    pq.write_table(pa.table({"image": [b"not an image", b""], "caption": ["a", "b"]}), tmp_path / "junk.parquet")
    corpus = PairFilesDataset("p", tmp_path, PairFilesLayout(files=["junk.parquet"], image_size=16)).pretrain_corpus()
    with pytest.raises(DatasetError, match=r"junk\.parquet: row 0, column 'image': cannot decode the image"):
        corpus.images.get([0])
    with pytest.raises(DatasetError, match=r"junk\.parquet: row 1, column 'image': no image"):
        corpus.images.get([1])
    pq.write_table(pa.table({"image": ["gone.jpg"], "caption": ["a"]}), tmp_path / "gone.parquet")
    with pytest.raises(DatasetError, match=r"gone\.parquet: 1 of 1 images are missing under .*gone\.jpg; fix "
                                           r"dataset\.layout\.image_root"):
        PairFilesDataset("p", tmp_path, PairFilesLayout(files=["gone.parquet"], image_size=16)).pretrain_corpus()
    data = (tmp_path / "gone.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.parquet: not a readable Parquet file .*truncated"):
        PairFilesDataset("p", tmp_path, PairFilesLayout(files=["cut.parquet"])).pretrain_corpus()


# --- MSR-VTT ------------------------------------------------------------------------------------

def test_uniform_frame_indices_are_segment_middles() -> None:
    assert uniform_frame_indices(10, 4).tolist() == [1, 3, 6, 8]
    assert uniform_frame_indices(10, 12).tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]
    assert uniform_frame_indices(1, 3).tolist() == [0, 0, 0]


def test_msrvtt_1ka_and_training_splits(tmp_path: Path) -> None:
    ds = MSRVTTDataset(make_msrvtt(tmp_path), MSRVTTLayout(n_frames=4, frame_size=16))
    test = ds.video_split("test")                       # alias of 1k-A
    assert test.ref.split == "1k-A" and test.texts == [s for _, s in MSRVTT_TEST]
    assert test.txt2vid.tolist() == [0, 1, 2]
    frames = test.videos.get([1])                       # video3
    assert frames.shape == (1, 4, 16, 16, 3)
    # frames 1, 3, 6, 8 of 10: red 20 t + 10, green 10 * 3 (lossy codec: a few levels off)
    assert np.allclose(frames[0, :, 8, 8, 0], [30, 70, 130, 170], atol=6)
    assert np.allclose(frames[0, :, 8, 8, 1], 30, atol=6)
    train = ds.video_split("train-9k")
    assert train.n_videos == len(MSRVTT_TRAIN9K) and len(train.texts) == 3 * len(MSRVTT_TRAIN9K)
    assert ds.video_split("train-7k").n_videos == 2
    assert len({ds.ref(s).fingerprint for s in ("1k-A", "train-9k", "train-7k")}) == 3
    with pytest.raises(DatasetError, match=r"unknown split 'full'; use one of 1k-A, train-9k, train-7k"):
        ds.video_split("full")


def test_msrvtt_broken_video_and_missing_video(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    (root / "videos" / "all" / "video3.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")
    split = MSRVTTDataset(root, MSRVTTLayout(n_frames=2, frame_size=16)).video_split("1k-A")
    split.videos.get([0])
    with pytest.raises(DatasetError, match=r"video3\.mp4: the video does not decode .*ffmpeg"):
        split.videos.get([1])
    (root / "videos" / "all" / "video9.mp4").unlink()
    with pytest.raises(DatasetError, match=r"msrvtt 1k-A: 1 of 3 videos are missing in .*video9\.mp4"):
        MSRVTTDataset(root).video_split("1k-A")


def test_msrvtt_caption_file_that_does_not_match_the_list(tmp_path: Path) -> None:
    root = make_msrvtt(tmp_path)
    (root / "msrvtt_data" / "MSRVTT_train.9k.csv").write_text("video_id\nvideo1\nvideo42\n")
    with pytest.raises(DatasetError, match=r"MSRVTT_data\.json: no caption for video42 \(listed in "
                                           r"MSRVTT_train\.9k\.csv\)"):
        MSRVTTDataset(root).video_split("train-9k")
    (root / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv").write_text("key,video_id,caption\nret0,video7,x\n")
    with pytest.raises(DatasetError, match=r"no column\(s\) \['sentence'\]"):
        MSRVTTDataset(root).video_split("1k-A")


def test_decode_video_frame_count_fallback_for_webm(tmp_path: Path) -> None:
    from vlpbench.benchmarks.data.video import write_video
    from tests.real_fixtures import video_frames

    path = tmp_path / "clip.webm"
    write_video(path, video_frames(2), codec="libvpx-vp9")
    frames = decode_video(path, 2, 8)     # webm announces 0 frames: counted from packets
    assert np.allclose(frames[:, 4, 4, 0], [20 * 2 + 10, 20 * 7 + 10], atol=8)
    assert MSRVTT_FRAMES == 10


# --- verify ---------------------------------------------------------------------------------------

def _fixture_manifest(name: str, counts: dict[str, int], media: dict[str, int], sha: dict[str, str] | None = None,
                      md5: dict[str, str] | None = None) -> dict:
    """The shipped manifest with the fixture's record and file counts (and optionally pinned hashes)."""
    manifest = load_manifest(name)
    for layout in manifest["layouts"].values():
        for fname, spec in layout["files"].items():
            if fname in counts:
                spec["records"] = counts[fname]
            spec["sha256"] = (sha or {}).get(fname)
            spec["md5"] = (md5 or {}).get(fname)
        for m in layout.get("media", []):
            key = m["folder"] if isinstance(m["folder"], str) else m["folder"][0]
            m["count"] = media.get(key, m["count"])
    return manifest


def test_shipped_manifests_are_complete() -> None:
    names = sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml"))
    assert names == ["coco", "flickr30k", "msrvtt"]
    for name in names:
        m = load_manifest(name)
        assert m["dataset"] == name
        for layout in m["layouts"].values():
            assert layout["files"] and layout["media"]
            for spec in layout["files"].values():
                assert spec["records"] > 0 and spec["records_kind"] and "sha256" in spec and spec["source"]
                assert spec["sha256"] is None or len(spec["sha256"]) == 64
                assert spec.get("md5") is None or len(spec["md5"]) == 32
    lavis = load_manifest("coco")["layouts"]["lavis"]["files"]["coco_karpathy_test.json"]
    assert lavis["sha256"].startswith("5b202a23") and lavis["md5"] == "3ff34b0ef2db02d01c37399f6a2a6cd1"


def test_verify_flickr_good_different_missing(tmp_path: Path) -> None:
    root = make_flickr_albef(tmp_path / "f")
    counts = {"flickr30k_train.json": 6, "flickr30k_val.json": 1, "flickr30k_test.json": 2}
    pinned = {"flickr30k_test.json": sha256_file(root / "flickr30k_test.json")}
    manifest = _fixture_manifest("flickr30k", counts, {"flickr30k-images": 6}, pinned)
    report = verify("flickr30k", root, decode=True, manifest=manifest)
    status = {c.item: c.status for c in report.checks}
    assert report.ok and report.layout == "albef", report.render()
    assert status == {"flickr30k_train.json": "unpinned", "flickr30k_val.json": "unpinned",
                      "flickr30k_test.json": "ok", "flickr30k-images/": "ok", "train images": "ok",
                      "val images": "ok", "test images": "ok"}
    assert report.splits["test"]["split"] == "karpathy-test"
    assert report.splits["test"]["fingerprint"] == KarpathyDataset("flickr30k", root).ref("test").fingerprint

    recs = json.loads((root / "flickr30k_test.json").read_text())
    recs[0]["caption"] = recs[0]["caption"][:4]
    (root / "flickr30k_test.json").write_text(json.dumps(recs))
    (root / "flickr30k-images" / "104.jpg").unlink()
    report = verify("flickr30k", root, manifest=manifest)
    status = {c.item: (c.status, c.detail) for c in report.checks}
    assert not report.ok
    assert status["flickr30k_test.json"][0] == "different" and "≠ manifest" in status["flickr30k_test.json"][1]
    assert status["flickr30k-images/"] == ("different", "5 files matching *.jpg, the full dataset has 6 (a subset "
                                                         "gives numbers that are not comparable)")
    assert status["train images"][0] == "missing" and "104.jpg" in status["train images"][1]
    assert "train" not in report.splits and "test" in report.splits


def test_verify_names_the_subfolder_trap_and_undecodable_images(tmp_path: Path) -> None:
    root = make_flickr_karpathy(tmp_path / "f")
    manifest = _fixture_manifest("flickr30k", {"dataset_flickr30k.json": 6}, {"flickr30k-images": 6})
    (root / "flickr30k-images" / "100.jpg").write_bytes(b"garbage")
    report = verify("flickr30k", root, decode=True, manifest=manifest)
    assert report.layout == "karpathy" and not report.ok
    test = next(c for c in report.checks if c.item == "test images")
    assert test.status == "broken" and "100.jpg: cannot decode the image" in test.detail
    # the whole dataset moved one level down: --root given as the images folder
    inner = root / "flickr30k-images"
    shutil.copytree(root / "annotations", inner / "annotations")
    report = verify("flickr30k", inner, manifest=manifest)
    train = next(c for c in report.checks if c.item == "train images")
    assert train.status == "missing" and f"use --root {root}" in train.detail


def test_verify_msrvtt_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_msrvtt(tmp_path / "m")
    manifest = _fixture_manifest("msrvtt", {"MSRVTT_JSFUSION_test.csv": 3, "MSRVTT_train.9k.csv": 5,
                                            "MSRVTT_train.7k.csv": 2, "MSRVTT_data.json": 15}, {"videos/all": 5})
    mpath = tmp_path / "manifest.yaml"
    mpath.write_text(yaml.safe_dump(manifest))
    out_json = tmp_path / "verify.json"
    assert main(["data", "verify", "msrvtt", "--root", str(root), "--manifest", str(mpath), "--decode",
                 "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "layout clip4clip" in text and "split 1k-A: msrvtt/1k-A fingerprint" in text and "\nOK;" in text
    saved = json.loads(out_json.read_text())
    assert saved["ok"] and set(saved["splits"]) == {"1k-A", "train-9k", "train-7k"}

    (root / "msrvtt_data" / "MSRVTT_train.7k.csv").unlink()
    (root / "videos" / "all" / "video9.mp4").write_bytes(b"junk")
    assert main(["data", "verify", "msrvtt", "--root", str(root), "--manifest", str(mpath), "--decode"]) == 1
    text = capsys.readouterr().out
    assert "ABSENT    MSRVTT_train.7k.csv" in text
    assert "BROKEN    1k-A videos" in text and "video9.mp4: the video does not decode" in text
    assert main(["data", "verify", "msrvtt", "--root", str(tmp_path / "nowhere")]) == 1
    assert main(["data", "verify", "imagenet", "--root", str(root)]) == 2
    assert "no verification manifest for 'imagenet'" in capsys.readouterr().err


def test_verify_checks_published_md5_where_no_sha256_is_known(tmp_path: Path) -> None:
    import hashlib

    root = tmp_path / "coco"
    for i, split in enumerate(("train", "val", "test")):
        write_jpeg(root / "val2014" / f"COCO_val2014_{i}.jpg", image_red(i))
        caption = "a caption" if split == "train" else ["a caption", "another"]
        (root / f"coco_karpathy_{split}.json").write_text(json.dumps(
            [{"image": f"val2014/COCO_val2014_{i}.jpg", "caption": caption}]))
    good = hashlib.md5((root / "coco_karpathy_test.json").read_bytes()).hexdigest()
    manifest = _fixture_manifest("coco", {f"coco_karpathy_{s}.json": 1 for s in ("train", "val", "test")},
                                 {"train2014": 0, "val2014": 3},
                                 md5={"coco_karpathy_test.json": good, "coco_karpathy_val.json": "0" * 32})
    (root / "train2014").mkdir()
    report = verify("coco", root, manifest=manifest)
    status = {c.item: (c.status, c.detail) for c in report.checks}
    assert report.layout == "lavis"
    assert status["coco_karpathy_test.json"] == ("ok", "md5 matches, 1 records")
    assert status["coco_karpathy_val.json"][0] == "different" and status["coco_karpathy_val.json"][1].startswith("md5")
    assert status["coco_karpathy_train.json"][0] == "unpinned"


# --- real sets in a suite -------------------------------------------------------------------------

def test_suite_evaluates_a_real_karpathy_set_zero_shot(tmp_path: Path, cache_root: Path) -> None:
    import torch

    from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
    from vlpbench.methods import load_pretrained
    from vlpbench.reports.store import read_evaluation
    from tests.conftest import MICRO_CLIP, SMALL_WORLD

    flickr = make_flickr_albef(tmp_path / "flickr")
    suite = {"name": "real", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
             "benchmarks": ["zeroshot_retrieval"],
             "train": {"tiny": {"steps": 4, "batch_size": 16, "log_every": 2}},
             "method_overrides": {"clip": MICRO_CLIP},
             "retrieval": {"datasets": [{"name": "flickr30k", "root": str(flickr)}]}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    job = out / "real" / "jobs" / "clip-tiny-s0"
    ev = read_evaluation(job / "eval" / "zeroshot_retrieval@flickr30k" / "results.json")
    ref = KarpathyDataset("flickr30k", flickr).ref("test")
    assert ev.dataset == ref.to_json() and ev.dataset["split"] == "karpathy-test"
    model, _ = load_pretrained(job / "model")
    res = int(model.preprocess.config.resolution)
    assert ev.protocol["split"] == "flickr30k/karpathy-test" and ev.protocol["n_texts"] == 9
    assert ev.protocol["captions_per_image"] == {"min": 4, "max": 5, "mean": 4.5}
    assert ev.protocol["image_decode"].startswith(f"Resize(({res}, {res}))")
    assert ev.protocol["annotation_format"] == "albef"
    split = KarpathyDataset("flickr30k", flickr, KarpathyLayout(image_size=res)).retrieval_split("test")
    direct = evaluate_image_text(model, split, RetrievalProtocol(), torch.device("cpu"), "fp32")
    assert ev.metrics == pytest.approx(direct.metrics)
    assert (job / "eval" / "zeroshot_retrieval" / "results.json").is_file()   # the suite's own split as before
    report = (out / "real" / "report.md").read_text()
    assert "## Zero-shot image-text retrieval (ITC) — flickr30k/karpathy-test" in report

    suite["retrieval"]["datasets"][0]["root"] = str(tmp_path / "nowhere")
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", "--suite", str(path), "--output", str(tmp_path / "out2"), "--no-progress"]) == 2
