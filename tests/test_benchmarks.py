"""The benchmarks keep running (they are not timed here: figures live in benchmarks/RESULTS.md)."""

from __future__ import annotations

from collections import Counter

from benchmarks import bench_cluster, synthetic


def test_the_synthetic_cluster_has_the_sizes_the_scale_issue_asks_for() -> None:
    kinds = Counter(kind.kind for kind, _ in synthetic.cluster())
    assert kinds["Pod"] == 10_000 and kinds["PyTorchJob"] == 5_000 and kinds["Notebook"] == 2_000
    assert kinds["Workflow"] == 1_000 and kinds["InferenceService"] == 500 and kinds["Node"] == 64
    workflow = next(obj for kind, obj in synthetic.cluster(0.001) if kind.kind == "Workflow")
    nodes = workflow["status"]["nodes"].values()
    assert sum(1 for node in nodes if node.get("templateName") == "system-container-impl") == 20  # 20 steps


def test_the_cluster_benchmarks_run_and_report_every_figure() -> None:
    figures = bench_cluster.run(0.02)
    names = " | ".join(f.what for f in figures)
    for expected in ("memory per tracked object", "ingestion", "event → visible", "cold start", "full scrape"):
        assert expected in names
    assert all(f.value for f in figures)
