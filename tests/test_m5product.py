"""The M5Product-format loader on fixtures in its layout: good products with every subset of modalities, and
broken folders that must name the file, the item and the fix."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vlpbench.benchmarks.data.files import DatasetError
from vlpbench.benchmarks.data.m5product import M5ProductDataset, M5ProductError, M5ProductLayout, read_wav
from vlpbench.methods import TextTokenizer, create_method
from vlpbench.methods.media import PRODUCT_MODALITIES

FEATURE_DIM = 16


def _wav(path: Path, data: np.ndarray, rate: int) -> None:
    """(channels, samples) float in [-1, 1] as 16-bit PCM."""
    pcm = (np.clip(data, -1, 1) * 32767).astype("<i2").T.reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def make_m5product(root: Path, items: dict[str, dict[str, Any]] | None = None) -> Path:
    """Six products, three categories; p1 complete, the others each lacking something."""
    from PIL import Image

    items = items or {
        "p1": {"title": "red wooden circle toy", "pv": "colour#:#red#;#material#:#wood", "label": "wood-circle"},
        "p2": {"title": "blue wooden circle", "pv": "", "label": "wood-circle"},
        "p3": {"title": "", "pv": "colour#:#green#;#shape#:#square", "label": "metal-square"},
        "p4": {"title": "green metal square", "pv": "-", "label": "metal-square"},
        "p5": {"title": "glass star", "pv": "material#:#glass", "label": "glass-star"},
        "p6": {"title": "clear glass star", "pv": "material#:#glass", "label": "glass-star"},
    }
    (root / "images").mkdir(parents=True)
    (root / "video_features").mkdir()
    (root / "audio").mkdir()
    (root / "annotations.json").write_text(json.dumps(items))
    rng = np.random.default_rng(0)
    for k, item_id in enumerate(items):
        Image.fromarray(rng.integers(0, 255, (40 + 4 * k, 48, 3), dtype=np.uint8)).save(root / "images" / f"{item_id}.jpg")
    for item_id, frames in (("p1", 5), ("p3", 2), ("p5", 9)):
        np.save(root / "video_features" / f"{item_id}.npy", rng.normal(size=(frames, FEATURE_DIM)).astype(np.float16))
    t = np.arange(8000) / 8000
    _wav(root / "audio" / "p1.wav", np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)]) * 0.5, 8000)
    _wav(root / "audio" / "p4.wav", np.sin(2 * np.pi * 220 * t)[None] * 0.5, 8000)
    return root


def test_products_load_with_every_modality_flagged(tmp_path: Path) -> None:
    ds = M5ProductDataset(make_m5product(tmp_path / "m5"))
    corpus = ds.product_corpus()
    assert ds.ids == ["p1", "p2", "p3", "p4", "p5", "p6"] and ds.split == "all" and len(ds.fingerprint) == 64
    assert corpus.extras["category"] == ["wood-circle", "wood-circle", "metal-square", "metal-square", "glass-star",
                                         "glass-star"]
    assert corpus.extras["table"][0] == [("colour", "red"), ("material", "wood")]
    assert corpus.extras["table"][1] == [] and corpus.extras["table"][3] == []        # '' and the 1-char marker
    missing = corpus.extras["missing"]
    col = {m: missing[:, i].tolist() for i, m in enumerate(PRODUCT_MODALITIES)}
    assert col["text"] == [False, False, True, False, False, False]
    assert col["image"] == [False] * 6
    assert col["table"] == [False, True, False, True, False, False]
    assert col["video"] == [False, True, False, True, False, True]
    assert col["audio"] == [False, True, True, False, True, True]
    images = corpus.images.get([0, 3])
    assert images.shape == (2, 256, 256, 3) and images.dtype == np.uint8


def test_media_follow_the_toolkit(tmp_path: Path) -> None:
    media = M5ProductDataset(make_m5product(tmp_path / "m5")).product_corpus().extras["media"]
    feats, count = media.video_features(np.array([0, 1, 2, 4]), 6, FEATURE_DIM)
    assert count.tolist() == [5, 0, 2, 6]                                     # the first T vectors, zeros after
    stored = np.load(tmp_path / "m5" / "video_features" / "p5.npy")
    assert np.allclose(feats[3], stored[:6].astype(np.float32)) and feats[1].sum() == 0 and feats[2, 2:].sum() == 0
    waves = media.audio_waves(np.array([0, 3, 1]), 16000, 0.75)
    assert waves.shape == (3, 12000) and waves[2].sum() == 0
    # Stereo: the channels are summed and halved (two equal channels give the mono signal back); 8 kHz -> 16 kHz.
    peak = np.abs(waves[0, 1000:11000]).max()
    assert peak == pytest.approx(0.5, abs=0.02)
    assert np.abs(waves[1, 1000:11000]).max() == pytest.approx(0.25, abs=0.02)  # mono: halved too (the toolkit)
    assert np.abs(waves[0, -200:]).max() > 0.4                              # cut at 0.75 s: still signal
    padded = media.audio_waves(np.array([0]), 16000, 1.5)[0]
    assert np.abs(padded[15000:16000]).max() > 0.4 and not padded[16100:].any()   # 1 s of sound, then zeros
    with pytest.raises(M5ProductError, match="video: {input: features"):
        media.video_frames(np.array([0]), 4, 16)
    with pytest.raises(M5ProductError, match=r"p1\.npy: video features of shape \(5, 16\), expected \(T, 8\)"):
        media.video_features(np.array([0]), 4, 8)
    data, rate = read_wav(tmp_path / "m5" / "audio" / "p1.wav")
    assert data.shape == (2, 8000) and rate == 8000


def test_a_split_file_selects_and_fingerprints_items(tmp_path: Path) -> None:
    root = make_m5product(tmp_path / "m5")
    (root / "test_ids.txt").write_text("p5\np1\n\n")
    ds = M5ProductDataset(root, M5ProductLayout(ids="test_ids.txt"))
    assert ds.ids == ["p5", "p1"] and ds.split == "test_ids"
    assert ds.fingerprint != M5ProductDataset(root).fingerprint
    (root / "bad_ids.txt").write_text("p1\np9\n")
    with pytest.raises(M5ProductError, match=r"bad_ids\.txt: 1 id\(s\) not in annotations\.json, e\.g\. \['p9'\]"):
        M5ProductDataset(root, M5ProductLayout(ids="bad_ids.txt"))


@pytest.mark.parametrize("breakage, pattern", [
    ("no_annotations", r"annotations\.json is missing"),
    ("truncated", r"annotations\.json: not valid JSON \(line 1, column \d+: .*\); the file may be truncated"),
    ("no_label", r"item 'p2': no 'label'"),
    ("bad_pv", r"item 'p1': pv: pair 1 'materialwood' has no '#:#'"),
    ("title_not_string", r"item 'p1': field 'title' must be a string"),
    ("missing_image", r"item 'p3': image .*images/p3\.jpg is missing"),
])
def test_broken_folders_name_the_file_item_and_fix(tmp_path: Path, breakage: str, pattern: str) -> None:
    root = make_m5product(tmp_path / "m5")
    ann = json.loads((root / "annotations.json").read_text())
    if breakage == "no_annotations":
        (root / "annotations.json").unlink()
    elif breakage == "truncated":
        (root / "annotations.json").write_text(json.dumps(ann)[:50])
    elif breakage == "no_label":
        del ann["p2"]["label"]
    elif breakage == "bad_pv":
        ann["p1"]["pv"] = "colour#:#red#;#materialwood"
    elif breakage == "title_not_string":
        ann["p1"]["title"] = ["red"]
    elif breakage == "missing_image":
        (root / "images" / "p3.jpg").unlink()
    if breakage in ("no_label", "bad_pv", "title_not_string"):
        (root / "annotations.json").write_text(json.dumps(ann))
    with pytest.raises(M5ProductError, match=pattern):
        M5ProductDataset(root)


def test_unreadable_media_name_their_file(tmp_path: Path) -> None:
    root = make_m5product(tmp_path / "m5")
    (root / "images" / "p2.jpg").write_bytes(b"not a jpeg")
    (root / "audio" / "p4.wav").write_bytes(b"RIFF....garbage")
    corpus = M5ProductDataset(root).product_corpus()
    with pytest.raises(DatasetError, match=r"p2\.jpg: cannot decode the image"):
        corpus.images.get([1])
    with pytest.raises(M5ProductError, match=r"p4\.wav: not a readable PCM WAV file .*ffmpeg"):
        corpus.extras["media"].audio_waves(np.array([3]), 16000, 0.5)


def test_scale_retrieves_m5product_items_from_their_features(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    from vlpbench.benchmarks.evaluation.products import ProductEvalProtocol, evaluate_products
    from tests.test_scale import MICRO_SCALE

    corpus = M5ProductDataset(make_m5product(tmp_path / "m5")).product_corpus()
    torch.manual_seed(0)
    model = create_method("scale", "tiny", tokenizer=tokenizer, overrides={
        **MICRO_SCALE, "video": {"input": "features", "feature_dim": FEATURE_DIM, "frames": 4}, "missing": "mask"})
    out = evaluate_products(model, corpus, ProductEvalProtocol(ks=(1, 5)), torch.device("cpu"), "fp32")
    assert out.feature_types == ["text", "image", "table", "video", "audio", "image+text", "joint"]
    assert all(0.0 <= v <= 100.0 for v in out.metrics.values()) and len(out.metrics) == 7 * 4
