"""`vlpbench data verify NAME --root DIR`: is a local copy of a real dataset the one the numbers assume?

Checks, against the manifest shipped in ``benchmarks/data/manifests/NAME.yaml``:
1. the layout: which annotation format is present (ALBEF/LAVIS per-split files or Karpathy's single file;
   CLIP4Clip's MSR-VTT files);
2. every annotation file: present, sha256 equal to the manifest's (or the md5 where only that is published;
   where the manifest knows neither, the computed sha256 is printed as "unpinned", never passed off as
   verified), record count equal;
3. the media: the file count of each image/video folder, and every file the annotations reference present
   (optionally decoded, ``--decode``), with the ALBEF ``flickr30k-images/`` sub-folder trap named;
4. the split identifiers and fingerprints that results will carry.

The outcome is a list of `Check`s; the command exits non-zero when any is missing, different or broken.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vlpbench.benchmarks.data.files import DatasetError, check_image_header, decode_image, read_json, sha256_file

MANIFEST_DIR = Path(__file__).parent / "manifests"
Status = Literal["ok", "unpinned", "absent", "missing", "different", "broken"]
FAILING: tuple[Status, ...] = ("missing", "different", "broken")


@dataclass
class Check:
    item: str
    status: Status
    detail: str = ""


@dataclass
class VerifyReport:
    dataset: str
    root: str
    layout: str | None
    checks: list[Check] = field(default_factory=list)
    splits: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.layout is not None and not any(c.status in FAILING for c in self.checks)

    def add(self, item: str, status: Status, detail: str = "") -> None:
        self.checks.append(Check(item, status, detail))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def render(self) -> str:
        lines = [f"{self.dataset} at {self.root}: layout {self.layout or 'not recognised'}"]
        width = max((len(c.item) for c in self.checks), default=10)
        for c in self.checks:
            lines.append(f"  {c.status.upper():9s} {c.item:{width}s}  {c.detail}".rstrip())
        for split, ref in self.splits.items():
            lines.append(f"  split {split}: {ref['dataset']}/{ref['split']} fingerprint {ref['fingerprint'][:16]}")
        bad = sum(c.status in FAILING for c in self.checks)
        unpinned = sum(c.status == "unpinned" for c in self.checks)
        verdict = "OK" if self.ok else f"NOT OK: {bad} problem(s)" if self.layout else "NOT OK: no known layout"
        if unpinned:
            verdict += f"; {unpinned} file(s) without a pinned sha256 in the manifest (their hashes are printed)"
        lines.append(verdict)
        return "\n".join(lines)


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(name: str, path: Path | None = None) -> dict[str, Any]:
    path = path or MANIFEST_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml"))
        raise DatasetError(f"no verification manifest for {name!r} ({path}); known: {', '.join(known)}")
    return yaml.safe_load(path.read_text())


def _find(root: Path, name: str, dirs: list[str]) -> Path | None:
    for d in dirs:
        p = root / d / name
        if p.is_file():
            return p
    return None


def _count_records(path: Path, kind: str) -> int:
    if kind == "json_list":
        data = read_json(path, "")
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list")
        return len(data)
    if kind == "karpathy_images":
        data = read_json(path, "")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f"{path}: expected {{'images': [...]}}")
        return len(data["images"])
    if kind == "msrvtt_sentences":
        data = read_json(path, "")
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
            raise DatasetError(f"{path}: expected {{'sentences': [...]}}")
        return len(data["sentences"])
    if kind == "csv_rows":
        with path.open(encoding="utf-8") as f:
            return max(0, sum(1 for line in f if line.strip()) - 1)
    raise ValueError(f"unknown record kind {kind!r}")


def _check_files(report: VerifyReport, root: Path, layout: dict[str, Any], dirs: list[str]) -> None:
    for name, spec in layout["files"].items():
        path = _find(root, name, dirs)
        if path is None:
            where = ", ".join(str(root / d) for d in dirs)
            if spec.get("optional"):
                report.add(name, "absent", f"optional, not in {where}")
            else:
                report.add(name, "missing", f"not in {where}")
            continue
        rel = str(path.relative_to(root))
        try:
            n = _count_records(path, spec["records_kind"]) if "records" in spec else None
        except DatasetError as err:
            report.add(rel, "broken", str(err))
            continue
        digest, want, algo = sha256_file(path), spec.get("sha256"), "sha256"
        if not want and spec.get("md5"):  # only an md5 is published (LAVIS' COCO files)
            digest, want, algo = md5_file(path), spec["md5"], "md5"
        counted = f", {n} records" if n is not None else ""
        if want and digest != want:
            report.add(rel, "different", f"{algo} {digest[:16]}… ≠ manifest {want[:16]}… "
                                         f"({spec.get('source', 'see the manifest')}){counted}")
        elif n is not None and n != spec["records"]:
            report.add(rel, "different", f"{n} records, the manifest expects {spec['records']}")
        elif want:
            report.add(rel, "ok", f"{algo} matches{counted}")
        else:
            report.add(rel, "unpinned", f"sha256 {digest} (no published hash to compare with){counted}")


def _check_media_folders(report: VerifyReport, root: Path, layout: dict[str, Any]) -> None:
    for spec in layout.get("media", []):
        options = spec["folder"] if isinstance(spec["folder"], list) else [spec["folder"]]
        folder = next((root / f for f in options if (root / f).is_dir()), None)
        if folder is None:
            report.add(options[0] + "/", "missing", f"no folder {' or '.join(str(root / f) for f in options)}")
            continue
        label = str(folder.relative_to(root)) + "/"
        n = sum(1 for p in folder.glob(spec["pattern"]) if p.is_file())
        if n != spec["count"]:
            report.add(label, "different", f"{n} files matching {spec['pattern']}, the full dataset has "
                                           f"{spec['count']} (a subset gives numbers that are not comparable)")
        else:
            report.add(label, "ok", f"{n} files")


def _check_referenced(report: VerifyReport, label: str, paths: list[Path], decode: Callable[[Path], Any] | None,
                      hint: Callable[[Path], str], how: str = "decodable") -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        report.add(label, "missing", f"{len(missing)} of {len(paths)} referenced files are missing: {shown}"
                                     f"{' …' if len(missing) > 5 else ''}.{hint(missing[0])}")
        return
    if decode is not None:
        broken = []
        for p in paths:
            try:
                decode(p)
            except DatasetError as err:
                broken.append(str(err))
        if broken:
            report.add(label, "broken", f"{len(broken)} of {len(paths)} files are not {how}: " + "; ".join(broken[:3]))
            return
    report.add(label, "ok", f"all {len(paths)} referenced files present{f' and {how}' if decode else ''}")


def _subfolder_hint(image_root: Path) -> Callable[[Path], str]:
    def hint(missing: Path) -> str:
        rel = missing.relative_to(image_root)
        if len(rel.parts) > 1:
            head = rel.parts[0]
            if image_root.name == head and (image_root / Path(*rel.parts[1:])).is_file():
                return (f" The paths start with '{head}/' and --root points inside that folder "
                        "(github.com/salesforce/ALBEF/issues/136): "
                        f"use --root {image_root.parent}.")
            if (image_root / rel.name).is_file():
                return f" The images lie directly in {image_root}: move them into {image_root / head}/."
        return ""
    return hint


def verify(name: str, root: Path, *, decode: bool = False, manifest: dict[str, Any] | None = None) -> VerifyReport:
    root = Path(root)
    manifest = manifest or load_manifest(name)
    dirs = manifest.get("annotation_dirs", [""])
    if not root.is_dir():
        report = VerifyReport(name, str(root), None)
        report.add(str(root), "missing", "the dataset root does not exist")
        return report
    present = {lay: sum(_find(root, f, dirs) is not None for f in spec["files"])
               for lay, spec in manifest["layouts"].items()}
    layout = max(present, key=lambda k: present[k]) if any(present.values()) else None
    report = VerifyReport(name, str(root), layout)
    if layout is None:
        expected = "; ".join(f"{lay}: {', '.join(spec['files'])}" for lay, spec in manifest["layouts"].items())
        report.add("annotations", "missing", f"none of the known annotation files found ({expected})")
        return report
    spec = manifest["layouts"][layout]
    _check_files(report, root, spec, dirs)
    _check_media_folders(report, root, spec)
    if any(c.status in ("missing", "broken") for c in report.checks if not c.item.endswith("/")):
        return report  # the loaders below would fail on the same files
    try:
        _check_with_loader(report, name, root, layout, spec, decode)
    except DatasetError as err:
        report.add("annotations", "broken", str(err))
    return report


def _check_with_loader(report: VerifyReport, name: str, root: Path, layout: str, manifest_layout: dict[str, Any],
                       decode: bool) -> None:
    if name in ("flickr30k", "coco"):
        from vlpbench.benchmarks.data.karpathy import KarpathyDataset, KarpathyLayout

        fmt = manifest_layout.get("format", layout)
        ds = KarpathyDataset(name, root, KarpathyLayout(format=fmt))
        for split in ds.available_splits():
            paths = [ds.image_root / it.image for it in ds.parse(split)]
            _check_referenced(report, f"{split} images", paths,   # headers always; pixels with --decode
                              (lambda p: decode_image(p, 32, str(p))) if decode else check_image_header,
                              _subfolder_hint(ds.image_root), "decodable" if decode else "readable (header)")
            if report.checks[-1].status == "ok":
                report.splits[split] = ds.ref(split).to_json()
    elif name == "msrvtt":
        from vlpbench.benchmarks.data.msrvtt import TEST_SPLITS, TRAIN_SPLITS, MSRVTTDataset
        from vlpbench.benchmarks.data.video import decode_video

        ds = MSRVTTDataset(root)
        for split in TEST_SPLITS + TRAIN_SPLITS:
            try:
                ds.files(split)
            except DatasetError:
                continue  # that split's list is not here (reported by the file checks if the manifest has it)
            video_ids, _, _ = ds.entries(split)
            _check_referenced(report, f"{split} videos", ds.video_paths(video_ids),
                              (lambda p: decode_video(p, 2, 32)) if decode else None, lambda p: "")
            if report.checks[-1].status == "ok":
                report.splits[split] = ds.ref(split).to_json()
    else:
        raise DatasetError(f"no loader check for {name!r}")


def write_report_json(report: VerifyReport, path: Path) -> None:
    from vlpbench.reports.store import atomic_write_text

    atomic_write_text(path, json.dumps(report.to_json(), indent=2))
