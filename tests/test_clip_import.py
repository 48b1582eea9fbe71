"""Released CLIP weights in every layout: architecture read from the weights, embeddings equal to the reference
implementations (open_clip, transformers) and `vlpbench eval` metrics equal to an independent recall computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlpbench.methods.checkpoints.clip import (SUPPORTED_TEXT, SUPPORTED_TOP, SUPPORTED_VISION, arch_from_openai_state,
                                      from_openai_state, named_arch, open_clip_config_dir)

open_clip_config_dir_real = open_clip_config_dir   # before a test points the module's lookup elsewhere
from vlpbench.methods.checkpoints.importer import import_checkpoint
from vlpbench.methods.towers import WeightsError
from tests.real_fixtures import make_flickr_retrieval

open_clip = pytest.importorskip("open_clip", reason="open_clip_torch (the dev extra) is the reference")

SMALL = dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8, head_width=16),
             text_cfg=dict(context_length=77, vocab_size=49408, width=48, heads=3, layers=2))
TEXTS = ["a dog runs on the grass", "A RED car, parked!", "two   birds\ton a wire", "émigré café", "",
         "x " * 100]


def _supported(cfg: dict) -> bool:
    return (set(cfg) <= SUPPORTED_TOP and set(cfg["vision_cfg"]) <= SUPPORTED_VISION
            and set(cfg["text_cfg"]) <= SUPPORTED_TEXT and isinstance(cfg["vision_cfg"].get("layers", 12), int))


def _configs() -> dict[str, dict]:
    folder = open_clip_config_dir()
    assert folder is not None
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_architecture_is_read_from_the_weights_for_every_plain_vit_config() -> None:
    """Every open_clip config of the plain ViT family, built on the meta device: the architecture read from its
    state dict equals the config, and the key mapping fills exactly our model's parameters, shape for shape."""
    from vlpbench.methods import get_spec
    from vlpbench.methods.config import validate

    class _Tok:   # only what CLIP.from_config reads
        vocab_size, pad_id, cls_id, sep_id = 49408, 0, 49406, 49407

    configs = {n: c for n, c in _configs().items() if _supported(c)}
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14"} <= set(configs)
    spec = get_spec("clip")
    for name, cfg in configs.items():
        with torch.device("meta"):
            ref = open_clip.model.CLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
        state = ref.state_dict()
        named = named_arch(name)
        inferred = arch_from_openai_state(state, named.activation, name,
                                          vision_head_width=named.vision_width // named.vision_heads,
                                          text_heads=named.text_heads)
        assert inferred.shapes() == named.shapes(), name
        assert (inferred.vision_heads, inferred.text_heads, inferred.activation) == \
            (named.vision_heads, named.text_heads, named.activation), name
        ours_state, dropped = from_openai_state(state, named)
        with torch.device("meta"):
            ours = spec.model_cls.from_config(validate(spec.config_cls, named.method_config(), where=name), _Tok())
        own = ours.state_dict()
        assert set(ours_state) == set(own), name
        assert all(ours_state[k].shape == own[k].shape for k in own), name
    assert named_arch("ViT-B-32").activation == "gelu"
    assert named_arch("ViT-B-32-quickgelu").activation == "quick_gelu"


def test_unsupported_families_are_refused_with_the_reason() -> None:
    refused = [n for n, c in _configs().items() if not _supported(c)]
    assert refused
    with pytest.raises(WeightsError, match="only the plain ViT"):
        named_arch(refused[0])
    with pytest.raises(WeightsError, match="unknown CLIP architecture"):
        named_arch("ViT-Q-99")


def _reference(tmp_path: Path, quick_gelu: bool = True, seed: int = 0, **cfg: dict) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(seed)
    ref = open_clip.model.CLIP(**(cfg or SMALL), quick_gelu=quick_gelu).eval()
    with torch.no_grad():   # a released model's scale, not the init's
        ref.logit_scale.fill_(4.6052)
    path = tmp_path / "open_clip_small.pt"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.fixture
def small_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SMALL as an open_clip config named ViT-Small-test in a folder named_arch reads; returns the QuickGELU name."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "ViT-Small-test.json").write_text(json.dumps(SMALL))
    monkeypatch.setattr("vlpbench.methods.checkpoints.clip.open_clip_config_dir", lambda: folder)
    return "ViT-Small-test-quickgelu"


def test_open_clip_state_dict_gives_open_clip_embeddings(tmp_path: Path, small_arch: str) -> None:
    ref, path = _reference(tmp_path)
    with pytest.raises(WeightsError, match="GELU or QuickGELU"):
        import_checkpoint(path, "open_clip")
    imported = import_checkpoint(path, "open_clip", "ViT-Small-test-quickgelu")
    model = imported.model
    assert imported.method == "clip" and imported.lineage[0]["arch"]["activation"] == "quick_gelu"

    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    x = model.preprocess.eval(images)
    ref_pre = open_clip.image_transform(32, is_train=False)
    from PIL import Image
    x_ref = torch.stack([ref_pre(Image.fromarray(a)) for a in images])
    torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-6)
    tokens = model.tokenize(TEXTS)
    ref_ids = open_clip.tokenize(TEXTS)
    assert torch.equal(torch.where(tokens.attention_mask.bool(), tokens.input_ids, 0), ref_ids)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), ref.encode_image(x_ref, normalize=True), rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_text(tokens), ref.encode_text(ref_ids, normalize=True), rtol=0,
                                   atol=1e-5)
        assert float(model.logit_scale) == pytest.approx(float(ref.logit_scale))
    # the wrong activation is a different function: GELU weights loaded as QuickGELU move the embeddings
    wrong = import_checkpoint(path, "open_clip", "ViT-Small-test").model
    with torch.no_grad():
        assert (wrong.encode_image(x) - model.encode_image(x)).abs().max() > 1e-3


def test_vit_b_32_state_dict_and_safetensors(tmp_path: Path) -> None:
    """The real ViT-B/32 architecture (random weights): read from a .safetensors state dict, equal embeddings."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    path = tmp_path / "vit_b_32.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = import_checkpoint(path, "open_clip", "ViT-B-32-quickgelu").model
    assert model.preprocess.config.resolution == 224 and model.text_max_length == 77
    images = np.random.default_rng(1).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    with torch.no_grad():
        x = model.preprocess.eval(images)
        torch.testing.assert_close(model.encode_image(x), ref.encode_image(x, normalize=True), rtol=0, atol=1e-5)
        tokens = model.tokenize(TEXTS[:3])
        torch.testing.assert_close(model.encode_text(tokens), ref.encode_text(open_clip.tokenize(TEXTS[:3]),
                                                                              normalize=True), rtol=0, atol=1e-5)


def test_a_state_dict_of_other_shapes_is_refused(tmp_path: Path, small_arch: str) -> None:
    _, path = _reference(tmp_path)
    (tmp_path / "configs" / "ViT-B-32.json").write_text((open_clip_config_dir_real() / "ViT-B-32.json").read_text())
    with pytest.raises(WeightsError, match="does not have the shapes of ViT-B-32"):
        import_checkpoint(path, "open_clip", "ViT-B-32-quickgelu")
    state = torch.load(path, weights_only=True)
    state["visual.extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match="visual.extra.weight"):
        import_checkpoint(tmp_path / "extra.pt", "open_clip", "ViT-Small-test-quickgelu")


def _write_hf_tokenizer(folder: Path) -> None:
    """vocab.json + merges.txt of open_clip's vocabulary, saved by transformers' own CLIPTokenizer."""
    import transformers

    from vlpbench.methods.clip_tokenizer import find_open_clip_bpe, read_open_clip_bpe

    vocab, merges = read_open_clip_bpe(find_open_clip_bpe())
    vocab = dict(zip([*list(vocab)[:-2], "<|startoftext|>", "<|endoftext|>"], vocab.values()))  # HF's names
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "src" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    transformers.CLIPTokenizer(str(folder / "src" / "vocab.json"), str(folder / "src" / "merges.txt")
                               ).save_pretrained(folder)


def _features(out: object) -> torch.Tensor:
    """get_*_features: a tensor (transformers 4) or an output whose pooler_output is the projection (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]


def _hf_clip_folder(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(2)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=48, intermediate_size=192, num_hidden_layers=2, num_attention_heads=3,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="quick_gelu"), projection_dim=32)
    ref = transformers.CLIPModel(cfg).eval()
    folder = tmp_path / "hf_clip"
    ref.save_pretrained(folder)
    _write_hf_tokenizer(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                                    ).save_pretrained(folder)
    return ref, folder


def test_hugging_face_clip_folder_gives_clipmodel_features(tmp_path: Path) -> None:
    import transformers
    from PIL import Image

    ref, folder = _hf_clip_folder(tmp_path)
    imported = import_checkpoint(folder)
    assert imported.format == "hf_clip"
    model = imported.model
    images = np.random.default_rng(2).integers(0, 256, size=(2, 40, 56, 3), dtype=np.uint8)
    proc = transformers.CLIPImageProcessor.from_pretrained(folder)
    pixels = proc(images=[Image.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]
    from vlpbench.benchmarks.data.files import resize_pil
    ours_u8 = np.stack([np.asarray(resize_pil(Image.fromarray(a), 32, "shortest")) for a in images])
    x = model.preprocess.eval(ours_u8)
    # transformers 5 resizes with torchvision tensors, Pillow's rounding differs by at most one 8-bit level on a few
    # pixels (the file's own transform otherwise: size, crop, bicubic, mean/std); features below use one input
    level = 1 / 255 / min(model.preprocess.config.std) + 1e-6
    assert float((x - pixels).abs().max()) <= level and float(((x - pixels).abs() > 1e-5).float().mean()) < 0.02
    x = pixels
    tok = transformers.CLIPTokenizer.from_pretrained(folder)
    ids = tok(TEXTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    tokens = model.tokenize(TEXTS)
    assert torch.equal(tokens.input_ids, ids["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), F.normalize(_features(
            ref.get_image_features(pixel_values=pixels)), dim=-1), rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_text(tokens), F.normalize(_features(ref.get_text_features(
            input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])), dim=-1), rtol=0, atol=1e-5)


def _independent_recalls(img: np.ndarray, txt: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """R@1/5/10 both ways from embeddings, written from the definitions (no harness code)."""
    s = img @ txt.T
    out = {}
    for k in (1, 5, 10):
        i2t = [np.isin(np.argsort(-s[i], kind="stable")[:k], np.where(owner == i)[0]).any() for i in range(len(img))]
        t2i = [owner[j] in np.argsort(-s[:, j], kind="stable")[:k] for j in range(len(txt))]
        out[f"i2t_R{k}"], out[f"t2i_R{k}"] = 100 * float(np.mean(i2t)), 100 * float(np.mean(t2i))
    return out


def test_vlpbench_eval_on_a_flickr_layout_equals_open_clip_recalls(tmp_path: Path, small_arch: str) -> None:
    from PIL import Image

    from vlpbench.benchmarks.cli import main

    ref, path = _reference(tmp_path)
    root = make_flickr_retrieval(tmp_path / "flickr", n_images=24)
    out = tmp_path / "out.json"
    rc = main(["eval", "--weights", str(path), "--format", "open_clip", "--arch", small_arch,
               "--dataset", "flickr30k", "--root", str(root), "--protocol", "check_counts=false",
               "--output", str(tmp_path / "outputs"), "--json", str(out), "--device", "cpu"])
    assert rc == 0
    got = json.loads(out.read_text())
    recs = json.loads((root / "flickr30k_test.json").read_text())
    pre = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        img = ref.encode_image(torch.stack([pre(Image.open(root / r["image"])) for r in recs]), normalize=True)
        caps = [c for r in recs for c in r["caption"]]
        txt = ref.encode_text(open_clip.tokenize(caps), normalize=True)
    owner = np.repeat(np.arange(len(recs)), [len(r["caption"]) for r in recs])
    want = _independent_recalls(img.numpy(), txt.numpy(), owner)
    for k, v in want.items():
        assert got["metrics"][k] == pytest.approx(v, abs=1e-9), k
    proto = got["protocol"]
    assert proto["resize"] == "shortest" and proto["split_counts"].startswith("nonstandard")
    assert proto["score_dtype"] == "float32" and proto["checkpoint_format"] == "open_clip"
    assert got["lineage"][0]["sha256"] and got["lineage"][0]["arch"]["activation"] == "quick_gelu"
    # the standard counts are enforced unless told otherwise
    assert main(["eval", "--weights", str(path), "--format", "open_clip", "--arch", small_arch,
                 "--dataset", "flickr30k", "--root", str(root), "--output", str(tmp_path / "outputs"),
                 "--device", "cpu"]) == 2


def test_openai_torchscript_archive_is_read_without_running_it(tmp_path: Path) -> None:
    """OpenAI's released .pt files are TorchScript archives: read as data (methods/checkpoints/files.py), told apart
    from open_clip state dicts, QuickGELU by definition, and giving the scripted model's embeddings."""
    import warnings

    # OpenAI's models all have 64-wide attention heads, which is what the archive's shapes are read with
    ref, _ = _reference(tmp_path, seed=4, embed_dim=32,
                        vision_cfg=dict(image_size=32, layers=2, width=128, patch_size=8, head_width=64),
                        text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(ref), str(tmp_path / "ViT-Small.pt"))
    imported = import_checkpoint(tmp_path / "ViT-Small.pt")
    assert imported.format == "openai" and imported.lineage[0]["file_format"] == "torchscript"
    assert imported.lineage[0]["arch"]["activation"] == "quick_gelu" and "attn_mask" in imported.lineage[0][
        "dropped_keys"]
    model = imported.model
    x = model.preprocess.eval(np.random.default_rng(4).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), ref.encode_image(x, normalize=True), rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_text(model.tokenize(TEXTS)),
                                   ref.encode_text(open_clip.tokenize(TEXTS), normalize=True), rtol=0, atol=1e-5)


def test_vlpbench_eval_on_msrvtt_1k_a(tmp_path: Path, small_arch: str) -> None:
    from vlpbench.benchmarks.cli import main
    from tests.real_fixtures import make_msrvtt

    _, path = _reference(tmp_path)
    root = make_msrvtt(tmp_path / "msrvtt")
    out = tmp_path / "video.json"
    assert main(["eval", "--weights", str(path), "--format", "open_clip", "--arch", small_arch,
                 "--dataset", "msrvtt", "--root", str(root), "--protocol", "check_counts=false",
                 "--output", str(tmp_path / "outputs"), "--json", str(out), "--device", "cpu"]) == 0
    got = json.loads(out.read_text())
    assert got["benchmark"] == "video_retrieval@msrvtt" and got["protocol"]["n_videos"] == 3
    assert got["protocol"]["split"] == "msrvtt/1k-A" and got["protocol"]["split_counts"].startswith("nonstandard")
    assert {"t2v_R1", "v2t_R1", "t2v_medr"} <= set(got["metrics"])


def test_vlpbench_eval_of_a_hugging_face_folder(tmp_path: Path) -> None:
    from vlpbench.benchmarks.cli import main

    ref, folder = _hf_clip_folder(tmp_path)
    root = make_flickr_retrieval(tmp_path / "flickr", n_images=16)
    out = tmp_path / "hf.json"
    assert main(["eval", "--weights", str(folder), "--dataset", "flickr30k", "--root", str(root), "--protocol",
                 "check_counts=false", "--protocol", "prompt=a photo of", "--output", str(tmp_path / "outputs"),
                 "--json", str(out), "--device", "cpu"]) == 0
    got = json.loads(out.read_text())
    # the reference: transformers' own processor, tokenizer and CLIPModel, recalls from the definitions
    import transformers
    from PIL import Image

    recs = json.loads((root / "flickr30k_test.json").read_text())
    proc = transformers.CLIPImageProcessor.from_pretrained(folder)
    tok = transformers.CLIPTokenizer.from_pretrained(folder)
    caps = [f"a photo of {c}" for r in recs for c in r["caption"]]
    with torch.no_grad():
        pixels = proc(images=[Image.open(root / r["image"]).convert("RGB") for r in recs],
                      return_tensors="pt")["pixel_values"]
        img = F.normalize(_features(ref.get_image_features(pixel_values=pixels)), dim=-1)
        ids = tok(caps, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        txt = F.normalize(_features(ref.get_text_features(**ids)), dim=-1)
    owner = np.repeat(np.arange(len(recs)), [len(r["caption"]) for r in recs])
    for k, v in _independent_recalls(img.numpy(), txt.numpy(), owner).items():
        assert got["metrics"][k] == pytest.approx(v, abs=1e-9), k
    assert got["lineage"][0]["format"] == "hf_clip" and got["protocol"]["prompt"] == "a photo of"
    assert got["protocol"]["prompt_side"].startswith("text") and got["protocol"]["tokenizer_source"].startswith("hf:")
    assert set(got["metrics"]) >= {"i2t_R1", "i2t_R5", "i2t_R10", "t2i_R1", "t2i_R5", "t2i_R10", "rsum"}
    # and `reproduce` on the folder: a fixture claim holding the reference's numbers reads reproduced
    from vlpbench.benchmarks import reproduce as rp
    from vlpbench.methods.card import Checkpoint, Confidence, retrieval_claim

    m = got["metrics"]
    claim = retrieval_claim("flickr30k-karpathy-test-1k", "zero-shot", "HF CLIPModel (fixture)",
                            tuple(m[f"i2t_R{k}"] for k in (1, 5, 10)), tuple(m[f"t2i_R{k}"] for k in (1, 5, 10)),
                            "transformers on the fixture", Confidence.VERIFIED, id="clip/hf-fixture",
                            checkpoint=Checkpoint(name=folder.name, url="tests", format="hf_clip"), resolution=32,
                            text_max_length=77, prompt="a photo of", scoring="itc", tie_policy="pessimistic",
                            check_counts=False)
    result = rp.reproduce(claim, folder, root, output=tmp_path, device="cpu", n_resamples=200)
    assert result.record.reproduction["status"] == rp.REPRODUCED
    assert result.record.protocol["prompt"] == "a photo of"
