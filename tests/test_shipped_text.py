"""Text that ships is true and self-contained: method cards, recipe sources, source text, shipped files.

Method cards are copied into every result record and report; docstrings, CLI help, comments and the
documentation ship with the package. The rules checked here:

1. **Card options name options that exist.** Every `Deviation.option` and `Assumption.option` is a
   comma-separated list of dotted paths, each optionally followed by a parenthesised note that is not part
   of the path ("momentum, queue_size (tiny)", "amf (what it computes on)"). A path resolves against:

   - ``suite.<path>``: the suite file, `benchmarks.suite.Suite` (e.g. ``suite.finetune.recipe_overrides``);
   - ``train.recipe`` / ``train.recipe.<field>``: the method's pretraining recipe, `methods.config.TrainRecipe`
     (a suite sets it through ``recipe_overrides``);
   - ``finetune.recipe`` / ``finetune.recipe.<field>``: the retrieval fine-tuning recipe, also a `TrainRecipe`
     (a suite sets it through ``finetune.recipe_overrides``);
   - anything else: the method's config class, `get_spec(name).config_cls` (a suite's ``method_overrides``).

   Resolution walks pydantic ``model_fields``. ``X | None`` and other unions resolve when any member
   does; ``dict[K, V]`` takes any key and continues in ``V`` (``Any`` accepts whatever follows); a list or
   tuple takes a numeric index; any other type is a leaf and takes no further part.

2. **Repository paths in card text exist.** In every string of `card.to_json()` (values and keys, recursively),
   a path that starts with one of this repository's top-level folders (``docs/``, ``methods/``,
   ``benchmarks/``, ``reports/``, ``slurm/``, ``tests/``) exists here, ``{a,b}`` alternatives and ``*`` globs
   expanded. It is not this repository's path, and is not checked, when it is part of a longer path or URL
   (preceded by ``/``, ``.``, ``:``, ``@``, ``-`` or a word character: ``github.com/x/y/docs/a.md``) or follows
   an upstream repository named as ``owner/name`` (optionally ``@ commit``): ``mlfoundations/open_clip
   docs/openclip_retrieval_results.csv``. Upstream code must therefore be cited as ``owner/name path`` (or by
   URL, or under a folder name this repository does not have, as in ``ALBEF models/vit.py``).

3. **No pointers to text that does not ship.** Flagged in card JSON, recipe ``source`` strings, every ``.py``
   file under methods/, benchmarks/ (the CLI included, module or package), reports/ and slurm/, and the
   shipped non-Python text (suites, manifests, cluster profiles, scripts, pyproject.toml, Makefile, README.md,
   docs/**.md):

   - the project's working references: ``../shared``, ``shared/reference``, ``seeds/``, the seed documents
     ("seed summary", "the seed's reading", "the seed says/gives", "(the seed: ..."), and the file names
     methods.md, anchors.md, environment.md and reproduction-pitfalls.md unless the name resolves to a file
     of this repository (from the text's folder or the repository root: docs/methods.md is one);
   - "anchors pain point" / "(anchors: ..." (the same working notes without the file name);
   - issue numbers of the project's tracker: "issue 8", "issues 3 and 4", "issue #8", "(issue ...";
   - ``#N`` references (``ALBEF #136``): allowed only where the same text (the file, or the card string) gives
     the thread's URL (``.../issues/136`` or ``.../pull/136``). A ``#`` followed by digits and then a letter,
     digit, ``;``, ``}`` or a quote is a colour (``#0173b2``, ``#555;``, ``"#555"``), not a reference;
   - ``§`` outside Markdown: only right after a file of this repository that exists
     (``docs/research/m5product.md §2.2``); a paper's section is written "Sec. 3.3". Markdown files number
     their own sections, so ``§`` is not checked in them;
   - claims that are no longer true: "until DDP", per-process queues (the queues all-gather every process's
     rows: methods/momentum.py, methods/distributed.py).
"""

from __future__ import annotations

import glob
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from vlpbench.methods import get_spec, list_methods
from vlpbench.methods.config import TrainRecipe

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("docs", "methods", "benchmarks", "reports", "slurm", "tests")

# ---------------------------------------------------------------------------------------------------------------
# Rule 1: card options


def _suite_model() -> type[BaseModel]:
    from vlpbench.benchmarks.suite import Suite
    return Suite


def option_paths(option: str) -> list[str]:
    """ "momentum, queue_size (tiny)" -> ["momentum", "queue_size"]."""
    return [p.strip() for p in re.sub(r"\s*\([^)]*\)", "", option).split(",") if p.strip()]


def _resolve(annotation: Any, parts: list[str]) -> str | None:
    """None when `parts` names something inside `annotation`, else what went wrong."""
    if not parts:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _resolve(typing.get_args(annotation)[0], parts)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        errors = [_resolve(a, parts) for a in members]
        return None if any(e is None for e in errors) else errors[0]
    if annotation is Any:
        return None
    if origin in (dict, Mapping) or annotation is dict:
        args = typing.get_args(annotation)
        return _resolve(args[1] if len(args) == 2 else Any, parts[1:])
    if origin in (list, tuple):
        if not parts[0].isdigit():
            return f"{parts[0]!r}: a list/tuple takes an index"
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return _resolve(args[0] if args else Any, parts[1:])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields
        if parts[0] not in fields:
            return f"{parts[0]!r} is not a field of {annotation.__name__} ({', '.join(fields)})"
        return _resolve(fields[parts[0]].annotation, parts[1:])
    return f"{parts[0]!r}: {annotation!r} is a leaf"


def resolve_option(method: str, path: str) -> str | None:
    """None when the dotted `path` of a card of `method` names an existing option (rule 1), else the problem."""
    parts = path.split(".")
    if parts[0] == "suite":
        return _resolve(_suite_model(), parts[1:]) if len(parts) > 1 else "'suite' alone names no option"
    if parts[:2] in (["train", "recipe"], ["finetune", "recipe"]):
        return _resolve(TrainRecipe, parts[2:])
    return _resolve(get_spec(method).config_cls, parts)


@pytest.mark.parametrize("method", list_methods())
def test_card_deviations_and_assumptions_name_options_that_exist(method: str) -> None:
    card = get_spec(method).card
    problems = []
    for kind, entries in (("deviation", card.deviations), ("assumption", card.assumptions)):
        for entry in entries:
            for path in option_paths(entry.option):
                why = resolve_option(method, path)
                if why is not None:
                    problems.append(f"{kind} {entry.option!r}: {path!r}: {why}")
    assert not problems, f"{method} card:\n" + "\n".join(problems)


def test_option_resolution_rejects_what_does_not_exist() -> None:
    assert resolve_option("cots", "amf.lam") is None
    assert resolve_option("cots", "suite.finetune.recipe_overrides") is None
    assert resolve_option("cots", "suite.method_overrides.cots.anything") is None      # dict[str, dict[str, Any]]
    assert resolve_option("tcl", "train.recipe.lr_scale.temp") is None                 # dict[str, float]: any key
    assert resolve_option("ernie_vil2", "embed_dim") is None                          # int | None
    assert resolve_option("cots", "amf.lamda") is not None
    assert resolve_option("cots", "amf.lam.x") is not None                            # a float takes no part
    assert resolve_option("tcl", "train.recipe.warmup") is not None
    assert resolve_option("clip", "suite.no_such_field") is not None
    assert resolve_option("clip", "recipe.lr") is not None                            # not a namespace
    assert option_paths("momentum, queue_size (tiny)") == ["momentum", "queue_size"]


# ---------------------------------------------------------------------------------------------------------------
# Rule 2: repository paths in card text

_PATH = re.compile(r"(?<![\w./:@-])(?P<path>(?:%s)/[\w./{},*-]*[\w*}])" % "|".join(TOP_LEVEL))
_UPSTREAM_BEFORE = re.compile(r"[\w.-]+/[\w.-]+(?:\s*@\s*[0-9a-fA-F]{7,40})?\s+$")


def repo_paths(text: str) -> list[str]:
    """Paths of this repository mentioned in `text` (rule 2)."""
    return [m["path"] for m in _PATH.finditer(text) if not _UPSTREAM_BEFORE.search(text[:m.start()])]


def _expand_braces(path: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if m is None:
        return [path]
    return [q for alt in m[1].split(",") for q in _expand_braces(path[:m.start()] + alt + path[m.end():])]


def path_exists(path: str) -> bool:
    return all(glob.glob(str(REPO / p)) if "*" in p else (REPO / p).exists() for p in _expand_braces(path))


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value: dict keys and values, recursively."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)


@pytest.mark.parametrize("method", list_methods())
def test_repository_paths_on_the_card_exist(method: str) -> None:
    mentioned = {p for s in strings(get_spec(method).card.to_json()) for p in repo_paths(s)}
    missing = sorted(p for p in mentioned if not path_exists(p))
    assert not missing, f"{method} card names files this repository does not have: {missing}"


def test_repository_path_rule() -> None:
    assert repo_paths("probes (docs/cots.md): queue 256") == ["docs/cots.md"]
    assert repo_paths("methods/momentum.py FeatureQueues.enqueue via methods/distributed.py") == [
        "methods/momentum.py", "methods/distributed.py"]
    assert repo_paths("mlfoundations/open_clip docs/openclip_retrieval_results.csv") == []
    assert repo_paths("uta-smile/TCL @ 74a3e4f docs/x.md") == []
    assert repo_paths("https://github.com/owner/repo/blob/main/docs/a.md and ALBEF models/vit.py") == []
    assert repo_paths("TCL/models/model_retrieval.py, configs/Retrieval_{coco,flickr}.yaml") == []
    assert all((REPO / d).is_dir() for d in TOP_LEVEL)
    assert path_exists("benchmarks/suites/*.yaml") and path_exists("docs/{cots,scale}.md")
    assert not path_exists("docs/{cots,no-such}.md") and not path_exists("docs/no-such.md")


# ---------------------------------------------------------------------------------------------------------------
# Rule 3: no pointers to text that does not ship

_NOT_SHIPPED_NAMES = re.compile(r"(?<![\w/.-])(?P<name>methods|anchors|environment|reproduction-pitfalls)\.md\b")
_ALWAYS = [
    (re.compile(r"\.\./shared\b|\bshared/reference\b"), "a path outside the repository (../shared/reference)"),
    (re.compile(r"(?<![\w/.-])seeds/"), "the seed documents (not in the repository)"),
    (re.compile(r"\bseed summary\b|\bthe seed(?:'s reading| says| gives|:)", re.I),
     "the seed documents (not in the repository)"),
    (re.compile(r"\banchors pain point|\(anchors:", re.I), "working notes (anchors) not in the repository"),
    (re.compile(r"\bissues?\s+#?\d+|\(issue\b", re.I), "an issue number of the project's tracker"),
    (re.compile(r"\buntil DDP\b|\bper-process queues?\b|\bqueues? (?:are|stay) per-process\b", re.I),
     "stale: the queues all-gather every process's rows (methods/momentum.py, methods/distributed.py)"),
]
_HASH_REF = re.compile(r"(?<![\w&#/])#(?P<n>\d{1,6})(?![\w;}\"'])")
_SECTION = re.compile(r"§")
_SECTION_AFTER_PATH = re.compile(r"(?P<path>[\w./-]+\.\w+)[`'\"]?\s*$")


def pointer_problems(text: str, folder: Path = REPO, markdown: bool = False) -> list[str]:
    """What in `text` points at text that does not ship (rule 3); `folder`: where relative names resolve."""
    problems = []
    for line_no, line in enumerate(text.splitlines(), 1):
        def flag(why: str, m: re.Match[str]) -> None:
            problems.append(f"line {line_no}: {why}: {line[max(0, m.start() - 60):m.end() + 40].strip()!r}")

        for pattern, why in _ALWAYS:
            for m in pattern.finditer(line):
                flag(why, m)
        for m in _NOT_SHIPPED_NAMES.finditer(line):
            if not ((folder / m[0]).is_file() or (REPO / m[0]).is_file()):
                flag(f"{m[0]} is not a file of this repository", m)
        for m in _HASH_REF.finditer(line):
            if not re.search(rf"/(?:issues|pull)/{m['n']}\b", text):
                flag(f"#{m['n']} without its URL (.../issues/{m['n']})", m)
        if not markdown:
            for m in _SECTION.finditer(line):
                before = _SECTION_AFTER_PATH.search(line[:m.start()])
                if before is None or not (REPO / before["path"]).is_file():
                    flag("§ not after a file of this repository (a paper's section: 'Sec. N')", m)
    return problems


def test_pointer_rule_catches_and_spares() -> None:
    bad = ["as methods.md §3.3 describes", "see ../shared/reference/anchors.md", "(issue 10)", "issue 8's run",
           "Issue 6's closing run", "the seed summary of the paper", "(the seed's reading)", "the seed says 24x24",
           "ALBEF #136 layout", "(anchors pain point 11)", "paper §3.2", "queues stay per-process until DDP lands",
           "environment.md §1", "seeds/001.txt"]
    for text in bad:
        assert pointer_problems(text), text
    good = ["docs/research/m5product.md §2.2", "(`docs/research/scale_code.md` §1)", "color: #555; border: #0173b2",
            'color="#555"', "ALBEF #136 (github.com/salesforce/ALBEF/issues/136)", "github.com/openai/CLIP/issues/115",
            "seed summaries (mean and std over seeds)", "the seed 0 run", "each of the 2B anchors",
            "the paper's Sec. 3.3", "docs/methods.md", "README.md#performance"]
    for text in good:
        assert not pointer_problems(text), (text, pointer_problems(text))
    assert pointer_problems("see methods.md") and not pointer_problems("see methods.md", REPO / "docs")
    assert not pointer_problems("see §2.4 above", markdown=True)


@pytest.mark.parametrize("method", list_methods())
def test_card_and_recipes_point_only_at_shipped_text(method: str) -> None:
    spec = get_spec(method)
    texts = {f"card: {s[:60]!r}": s for s in strings(spec.card.to_json())}
    for kind, recipes in (("recipe", spec.recipes), ("finetune recipe", spec.finetune_recipes)):
        for size, recipe in recipes.items():
            texts[f"{kind} {size} source"] = str(recipe.get("source", ""))
    problems = [f"{where}: {p}" for where, text in texts.items() for p in pointer_problems(text)]
    assert not problems, f"{method}:\n" + "\n".join(problems)


def _shipped_files() -> list[Path]:
    patterns = ["methods/**/*.py", "benchmarks/**/*.py", "reports/**/*.py", "slurm/**/*.py",
                "benchmarks/**/*.yaml", "slurm/**/*.yaml", "slurm/**/*.sh", "pyproject.toml", "Makefile",
                "README.md", "docs/**/*.md"]
    files = {Path(p) for pattern in patterns for p in glob.glob(pattern, root_dir=REPO, recursive=True)}
    return sorted(f for f in files if "__pycache__" not in f.parts)


@pytest.mark.parametrize("path", [str(p) for p in _shipped_files()])
def test_shipped_file_points_only_at_shipped_text(path: str) -> None:
    file = REPO / path
    problems = pointer_problems(file.read_text(encoding="utf-8"), file.parent, markdown=file.suffix == ".md")
    assert not problems, f"{path}:\n" + "\n".join(problems)


def test_the_scan_covers_the_cli_and_the_cards_sources() -> None:
    files = {p.as_posix() for p in _shipped_files()}
    assert "benchmarks/cli.py" in files or any(f.startswith("benchmarks/cli/") for f in files)   # argparse help
    assert {"methods/card.py", "methods/tcl.py", "reports/markdown.py", "slurm/profiles.py", "pyproject.toml",
            "README.md"} <= files
