"""Same-category product retrieval (M5Product protocol) per feature type, leave-one-out over a split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.evaluation.products import ProductEvalProtocol, evaluate_products
from vlpbench.benchmarks.registry import BenchmarkSpec, register_benchmark
from vlpbench.benchmarks.tasks.common import describe_lineage, eval_context, write_evaluation
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel
from vlpbench.methods.media import PRODUCT_MODALITIES
from vlpbench.reports.sections import ReportSection
from vlpbench.reports.store import PretrainRecord

if TYPE_CHECKING:
    from vlpbench.benchmarks.job import Job


class ProductSpec(StrictModel):
    split: str = Field("test", description="The split whose items are queries and gallery (leave-one-out).")
    protocol: ProductEvalProtocol = Field(default_factory=ProductEvalProtocol,
                                          description="M5Product's evaluator: K list, top-10 cap, cut-off rule.")


def evaluate_products_records(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                       config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    suite = job.suite
    device, precision, lineage = eval_context(job, job_dir, model)
    corpus = dataset.product_corpus(suite.products.split)
    proto = suite.products.protocol
    outcome = evaluate_products(model, corpus, proto, device, precision)
    labels = corpus.extras["category"]
    missing = corpus.extras.get("missing")
    protocol = {
        "task": "same-category product retrieval", "setting": "zero-shot (pretrain features)",
        "lineage": describe_lineage(lineage) + " (no fine-tuning)",
        "split": f"{corpus.ref.dataset}/{corpus.ref.split}", "n_items": len(corpus),
        "n_categories": len(set(labels)), "queries": "every item; gallery: the same items (leave-one-out)",
        "relevance": "same category label", "title": "alt_text", "similarity": "dot product",
        "feature_types": outcome.feature_types, "ks": list(proto.ks), "max_topk": proto.max_topk,
        "exclude_query": proto.exclude_query, "positives_include_query": proto.positives_include_query,
        "cutoff": proto.cutoff, "missing_fraction": None if missing is None else
        {m: round(float(v), 4) for m, v in zip(PRODUCT_MODALITIES, missing.mean(axis=0))},
        "resolution": int(model.preprocess.config.resolution), "text_max_length": model.text_max_length,
        **({"resolution_changes": model.resolution_changes} if getattr(model, "resolution_changes", None) else {}),
        "precision": precision, "metric_units": "percent", "tokenizer": config["tokenizer"]["fingerprint"][:16],
    }
    return {"product_retrieval": write_evaluation(job, job_dir / "eval" / "product_retrieval", config, device, corpus.ref,
                                        protocol, outcome.metrics, lineage, outcome.timings)}


def product_headline(metrics: Mapping[str, float]) -> str:
    features = sorted({k.split("/")[0] for k in metrics if k.endswith("/mAP@1")})
    return "mAP@1 " + "  ".join(f"{f} {metrics[f + '/mAP@1']:.1f}" for f in features)


register_benchmark(BenchmarkSpec(
    name="product_retrieval", section="products", settings=ProductSpec, run=evaluate_products_records,
    records=lambda job, model: ["product_retrieval"], headline=product_headline,
    describe_split=lambda suite: suite.products.split, in_default_suite=True, always_in_config=True,
    description="same-category product retrieval per feature type",
    report=(ReportSection("product_retrieval", "Same-category product retrieval (M5Product protocol)", "products",
                          40),)))
