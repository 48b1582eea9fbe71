"""Every GPU figure docs/performance.md and docs/gpu-notes.md need, from one call, into one JSON.

    python -m vlpbench.benchmarks.perf.gpu_check --out outputs/gpu [--budget-s 540] [--quick]

Lent GPUs come for minutes, so the steps run in order of importance, each in its own process with its own time
limit, and the JSON is rewritten after every step: a cut run still returns what finished. Steps:

1. `machine`: the device's dense matmul peak, fp32 and bf16 (what MFU is measured against);
2. `train_bf16` / `train_fp32`: CLIP-base and TCL-base Trainer steps (time, samples/s, MFU against the peak of the
   same precision) — is bf16 faster than fp32 for every method;
3. `open_clip`: our CLIP against open_clip's at ViT-B/16, same GPU, bf16 autocast, same batch, alternated;
4. `eval_1k`: `vlpbench eval` of a ViT-B/16 (random weights: the cost does not depend on them) on a generated
   1,000-image / 5,000-caption Flickr30K-layout split: wall time and images/s;
5. `rerank`: TCL-base cross-encoder pairs/s (batched vs one query per forward), and from it the time of TCL's
   top-128 re-ranking of a 1K-image test set;
6. `max_batch`: the largest CLIP-base / TCL-base training batch of 64, 128, 256, 512 that fits;
7. `eval_5k`: the same ITC evaluation at COCO 5K's size (5,000 images / 25,000 captions).

`--quick` runs the same plumbing at tiny size on whatever device there is (seconds per step on a CPU), to check the
script before device time is spent on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VLPBENCH = [sys.executable, "-m", "vlpbench.benchmarks.cli"]


def run_step(name: str, cmd: list[str], timeout_s: float, out: Path) -> dict[str, Any]:
    """Run one step's command; its JSON output (if it wrote `out`) with wall time, exit status and the log tail."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        rc, log = proc.returncode, (proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired as err:
        rc, log = 124, f"timed out after {timeout_s:.0f} s: {(err.stdout or b'')!r}"[-2000:]
    result: dict[str, Any] = {"cmd": " ".join(cmd), "rc": rc, "wall_s": time.perf_counter() - t0,
                              "log_tail": log[-1500:]}
    if out.is_file():
        try:
            result["result"] = json.loads(out.read_text())
        except json.JSONDecodeError:
            result["result"] = None
    return result


def make_split(root: Path, n_images: int, captions: int = 5, side: int = 256) -> Path:
    """A Flickr30K-layout test split of smooth random JPEGs (decoding cost like photos') with random captions."""
    import numpy as np
    from PIL import Image

    if (root / "flickr30k_test.json").is_file():
        return root
    words = "a the dog cat red blue car boat runs sits small big green tree man woman on near water grass".split()
    rng = np.random.default_rng(0)
    (root / "flickr30k-images").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n_images):
        small = rng.integers(0, 256, size=(side // 16, side // 16 + 4, 3), dtype=np.uint8)
        name = f"flickr30k-images/{i}.jpg"
        Image.fromarray(small).resize((side + 64, side), Image.Resampling.BICUBIC).save(root / name, quality=90)
        recs.append({"image": name, "caption": [" ".join(rng.choice(words, size=10)) for _ in range(captions)]})
    (root / "flickr30k_test.json").write_text(json.dumps(recs))
    return root


def clip_weights(path: Path, arch: str) -> Path:
    """A random open_clip state dict of `arch` (the cost of an evaluation does not depend on the weights)."""
    if not path.is_file():
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = open_clip.create_model(arch, pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def steps(out: Path, quick: bool) -> list[tuple[str, list[str], float, Path]]:
    size = "tiny" if quick else "base"
    steps_n = "2" if quick else "5"
    arch = "ViT-S-32" if quick else "ViT-B-16-quickgelu"
    device = "auto"
    n1k = 16 if quick else 1000
    n5k = 32 if quick else 5000
    perf = [*VLPBENCH, "perf", "--size", size]
    return [
        ("machine", [*perf, "--only", "machine", "--output", str(out / "machine.json")], 120, out / "machine.json"),
        ("train_bf16", [*perf, "--only", "machine,train", "--methods", "clip,tcl", "--steps", steps_n,
                        "--precision", "bf16" if not quick else "fp32", "--output", str(out / "train_bf16.json")],
         240, out / "train_bf16.json"),
        ("train_fp32", [*perf, "--only", "machine,train", "--methods", "clip,tcl", "--steps", steps_n,
                        "--precision", "fp32", "--output", str(out / "train_fp32.json")], 240, out / "train_fp32.json"),
        ("open_clip", [*perf, "--only", "open_clip", "--batch-size", "32" if quick else "128", "--repeats", "3",
                       "--output", str(out / "open_clip.json")], 240, out / "open_clip.json"),
        ("eval_1k", ["EVAL", str(n1k), arch, device], 300, out / "eval_1k.json"),
        ("rerank", [*perf, "--only", "rerank", "--repeats", "2", "--output", str(out / "rerank.json")], 240,
         out / "rerank.json"),
        ("max_batch", ["MAXBATCH", size], 300, out / "max_batch.json"),
        ("eval_5k", ["EVAL", str(n5k), arch, device], 400, out / "eval_5k.json"),
    ]


def eval_command(out: Path, n_images: int, arch: str, device: str, name: str) -> list[str]:
    root = make_split(out / f"flickr_{n_images}", n_images)
    weights = clip_weights(out / f"{arch}.safetensors", arch)
    return [*VLPBENCH, "eval", "--weights", str(weights), "--format", "open_clip", "--arch", arch, "--dataset",
            "flickr30k", "--root", str(root), "--protocol", "check_counts=false", "--device", device,
            "--output", str(out / "eval_outputs"), "--name", name, "--json", str(out / f"{name}.json")]


def max_batch(size: str) -> dict[str, Any]:
    """The largest training batch (of 64..512) that fits, per method: one Trainer step each, OOM caught."""
    import torch

    from vlpbench.benchmarks.perf.train_step import run as train_run

    found: dict[str, Any] = {}
    stopped: dict[str, str] = {}
    for method in ("clip", "tcl"):
        fits = None
        for batch in (64, 128, 256, 512):
            try:
                train_run([method], size=size, steps=1, warmup=1, batch_size=batch)
                fits = batch
            except torch.OutOfMemoryError:
                stopped[method] = f"out of memory at {batch}"
                break
            except ValueError as err:          # e.g. a queue smaller than the batch (tiny presets)
                stopped[method] = f"{batch}: {err}"
                break
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        found[method] = fits
    return {"size": size, "largest_batch_of_64_128_256_512": found, "stopped_by": stopped}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="outputs/gpu")
    p.add_argument("--budget-s", type=float, default=540.0, help="stop starting steps after this many seconds")
    p.add_argument("--quick", action="store_true", help="tiny sizes on this device: check the plumbing")
    p.add_argument("--only", help="comma-separated step names")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"quick": args.quick, "steps": {}}
    t0 = time.perf_counter()
    chosen = set(args.only.split(",")) if args.only else None
    for name, cmd, limit, result_file in steps(out, args.quick):
        if chosen is not None and name not in chosen:
            continue
        left = args.budget_s - (time.perf_counter() - t0)
        if left < 30:
            report["steps"][name] = {"skipped": "time budget spent"}
            continue
        if cmd[0] == "EVAL":
            cmd = eval_command(out, int(cmd[1]), cmd[2], cmd[3], name)
        elif cmd[0] == "MAXBATCH":
            cmd = [sys.executable, "-c", f"import json; from benchmarks.perf.gpu_check import max_batch; "
                                         f"open({str(result_file)!r}, 'w').write(json.dumps(max_batch({cmd[1]!r})))"]
        report["steps"][name] = run_step(name, cmd, min(limit, left), result_file)
        print(f"{name}: rc {report['steps'][name]['rc']}, {report['steps'][name]['wall_s']:.1f} s", flush=True)
        (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    report["total_s"] = time.perf_counter() - t0
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"written: {out / 'gpu.json'}")
    return 0 if all(s.get("rc", 0) == 0 for s in report["steps"].values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
