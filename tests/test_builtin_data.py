"""The built-in world: deterministic bytes, disjoint splits, hard negatives, noise, modalities, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlpbench.benchmarks.data import BuiltinConfig, BuiltinDataset, DatasetError, open_dataset
from vlpbench.benchmarks.data.builtin.build import SPLIT_ORDER, ensure_built, generate
from vlpbench.benchmarks.data.builtin.render import render_audio, render_image, render_video
from vlpbench.benchmarks.data.builtin.scene import Scene, SceneObject

TINY = dict(n_pretrain=200, n_train=60, n_val=30, n_test=60, n_video_train=10, n_video_test=10)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    cfg = BuiltinConfig(**TINY)
    m1 = generate(cfg, tmp_path / "a")
    m2 = generate(cfg, tmp_path / "b")
    assert _all_files(tmp_path / "a") == _all_files(tmp_path / "b")
    assert m1["fingerprint"] == m2["fingerprint"]
    m3 = generate(BuiltinConfig(**TINY, seed=1), tmp_path / "c")
    assert m3["fingerprint"] != m1["fingerprint"]


def test_test_split_does_not_depend_on_the_pretraining_size(tmp_path: Path) -> None:
    a = generate(BuiltinConfig(**TINY), tmp_path / "a")
    b = generate(BuiltinConfig(**{**TINY, "n_pretrain": 333}), tmp_path / "b")
    assert a["splits"]["test"]["fingerprint"] == b["splits"]["test"]["fingerprint"]
    assert a["splits"]["pretrain"]["fingerprint"] != b["splits"]["pretrain"]["fingerprint"]


def test_splits_do_not_overlap(small_world: BuiltinDataset) -> None:
    keys: dict[str, set[str]] = {}
    for split in SPLIT_ORDER:
        keys[split] = {json.dumps(Scene.from_json(r["scene"]).visual_key()) for r in small_world.records(split)}
        assert len(keys[split]) == len(small_world.records(split)), f"duplicate scenes inside {split}"
    for i, a in enumerate(SPLIT_ORDER):
        for b in SPLIT_ORDER[i + 1:]:
            assert not keys[a] & keys[b], f"{a} and {b} share scenes"


def test_compositional_hard_negatives_exist_and_defeat_bag_of_words(small_world: BuiltinDataset) -> None:
    recs = {r["id"]: r for r in small_world.records("test")}
    twins = [r for r in recs.values() if r["twin_of"]]
    assert len(twins) >= 0.1 * len(recs)
    assert {r["twin_kind"] for r in twins} <= {"swap_colour", "swap_size", "swap_position"}
    images = small_world.images("test")
    for t in twins:
        a, b = Scene.from_json(recs[t["twin_of"]]["scene"]), Scene.from_json(t["scene"])
        # Same bag of visual words: shapes, colours, sizes and occupied cells...
        for attr in ("shape", "colour", "size"):
            assert Counter(getattr(o, attr) for o in a.objects) == Counter(getattr(o, attr) for o in b.objects)
        assert Counter((o.row, o.col) for o in a.objects) == Counter((o.row, o.col) for o in b.objects)
        assert sorted(" ".join(recs[t["twin_of"]]["tags"]).split()) == sorted(" ".join(t["tags"]).split())
        # ...but a different binding, hence a different picture.
        assert a.visual_key() != b.visual_key()
        assert not np.array_equal(images.get([recs[t["twin_of"]]["index"]]), images.get([t["index"]]))


def test_captions_and_modalities(small_world: BuiltinDataset) -> None:
    recs = small_world.records("test")
    n_caps = [len(r["captions"]) for r in recs]
    assert min(n_caps) >= 5 and max(n_caps) > 5            # never assume exactly 5
    for r in recs:
        scene = Scene.from_json(r["scene"])
        assert r["category"] == f"{scene.material}-{scene.main.shape}"
        assert dict(r["table"])["material"] == scene.material
        assert len(r["tags"]) == len(scene.objects)
        assert r["missing"] == [] and not r["noisy"]
        assert all(c.endswith(".") for c in r["captions"]) and len(set(r["captions"])) >= 3
        moving = [o for o in scene.objects if o.motion != "still"]
        if moving:  # every video caption talks about motion
            assert all(any(w in c for w in ("move", "slide", "rise", "fall", "drift", "still", "place"))
                       for c in r["video_captions"])


def test_pretraining_noise_and_missing_modalities_keep_ground_truth(small_world_config: BuiltinConfig,
                                                                    small_world: BuiltinDataset) -> None:
    recs = small_world.records("pretrain")
    noisy = [r for r in recs if r["noisy"]]
    assert len(noisy) == round(small_world_config.noise_rate * len(recs))
    assert sum(r["alt_text"] != r["clean_alt_text"] for r in noisy) >= 0.8 * len(noisy)
    assert all(r["alt_text"] == r["clean_alt_text"] for r in recs if not r["noisy"])
    corpus = small_world.pretrain_corpus()
    assert corpus.extras["noisy"].sum() == len(noisy)
    for modality, rate in small_world_config.missing_rates.items():
        share = np.mean([modality in r["missing"] for r in recs])
        assert abs(share - rate) < 0.08, (modality, share)


def test_video_first_frame_is_the_image_and_objects_move() -> None:
    obj = SceneObject("circle", "red", "large", row=1, col=0, x=0.2, y=0.5, motion="right")
    scene = Scene(objects=(obj,), background="gray", material="wood", brand="acme", render_seed=7)
    video = render_video(scene, 64, frames=6)
    assert video.shape == (6, 64, 64, 3) and video.dtype == np.uint8
    assert np.array_equal(video[0], render_image(scene, 64))

    def centroid_x(frame: np.ndarray) -> float:
        red = (frame[..., 0] > 180) & (frame[..., 1] < 90)
        return float(np.nonzero(red)[1].mean())

    xs = [centroid_x(f) for f in video]
    assert all(b > a for a, b in zip(xs, xs[1:])) and xs[-1] - xs[0] > 10


def test_audio_encodes_hidden_material_deterministically() -> None:
    obj = SceneObject("star", "blue", "small", 0, 0, 0.2, 0.2)
    wood = Scene(objects=(obj,), background="sand", material="wood", brand="nova", render_seed=3)
    metal = Scene(objects=(obj,), background="sand", material="metal", brand="nova", render_seed=3)
    a1, a2 = render_audio(wood), render_audio(wood)
    assert a1.shape == (16000,) and a1.dtype == np.float32 and np.array_equal(a1, a2)
    # metal rings longer: more energy in the second half of the note
    tail = slice(4000, 8000)  # 0.25-0.5 s: wood has decayed to noise, metal still rings
    assert float(np.sum(render_audio(metal)[tail] ** 2)) > 3 * float(np.sum(a1[tail] ** 2))


def test_missing_or_incomplete_dataset_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"dataset folder {tmp_path / 'nope'} does not exist"):
        BuiltinDataset(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(DatasetError, match="manifest.json is missing"):
        BuiltinDataset(tmp_path / "half")
    root = ensure_built(BuiltinConfig(**TINY), tmp_path / "cache")
    (root / "test" / "images.npy").unlink()
    with pytest.raises(DatasetError, match="test/images.npy is missing"):
        BuiltinDataset(root)


def test_cache_is_reused(tmp_path: Path) -> None:
    cfg = BuiltinConfig(**TINY)
    root = ensure_built(cfg, tmp_path)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert ensure_built(cfg, tmp_path) == root and (root / "manifest.json").stat().st_mtime_ns == stamp
    # no leftover temporary folder (beside .locks/, whose empty files serialise concurrent builders)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, ".locks"])


def test_bad_generator_options_name_the_field() -> None:
    from vlpbench.methods.config import ConfigError

    with pytest.raises(ConfigError, match="dataset.options: missing_rates: .*unknown modality 'smell'"):
        open_dataset("builtin", options={"missing_rates": {"smell": 0.1}})
    with pytest.raises(ConfigError, match="dataset.options: n_testt: unknown option. Did you mean 'n_test'"):
        open_dataset("builtin", options={"n_testt": 5})


def test_retrieval_split_ground_truth(small_world: BuiltinDataset) -> None:
    split = small_world.retrieval_split("test")
    recs = small_world.records("test")
    assert split.n_images == len(recs) and split.n_texts == sum(len(r["captions"]) for r in recs)
    assert split.texts[split.txt2img.tolist().index(3)] == recs[3]["captions"][0]
    assert split.captions_per_image()["min"] >= 5
    with pytest.raises(DatasetError, match="retrieval splits"):
        small_world.retrieval_split("pretrain")


def test_cache_key_follows_the_generator_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vlpbench.benchmarks.data.builtin import build

    cfg = BuiltinConfig(**TINY)
    before = build.dataset_dir(cfg, tmp_path)
    monkeypatch.setattr(build, "generator_source_hash", lambda: "edited-generator")
    assert build.dataset_dir(cfg, tmp_path) != before
