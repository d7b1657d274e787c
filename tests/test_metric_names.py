"""catalog.metric_names: metric names at an operating point, built and read in one place."""

from __future__ import annotations

from catalog.metric_names import MetricName, at_fpr, at_iou, operating_points


def test_built_as_the_metrics_table_has_always_named_them() -> None:
    assert at_fpr("tpr", 0.01) == "tpr@fpr=0.01"
    assert at_fpr("threshold", 1e-3) == "threshold@fpr=0.001"
    assert at_fpr("verif_tpr", 0.5) == "verif_tpr@fpr=0.5"
    assert at_iou("recall", 0.5) == "recall@iou=0.5"
    assert str(MetricName("tpir", "fpir", 0.1)) == "tpir@fpir=0.1"


def test_parsed_back() -> None:
    assert MetricName.parse("threshold@fpr=0.01") == MetricName("threshold", "fpr", 0.01)
    assert MetricName.parse("tpir_threshold@fpir=0.1") == MetricName("tpir_threshold", "fpir", 0.1)
    for plain in ("auc", "top1", "tpr@fpr=", "tpr@fpr=nan", "tpr@=0.1"):
        assert MetricName.parse(plain) is None


def test_operating_points() -> None:
    names = {"auc", "tpr@fpr=0.1", "threshold@fpr=0.1", "threshold@fpr=0.001", "tpir@fpir=0.01"}
    assert operating_points(names, "threshold") == [0.001, 0.1]
    assert operating_points(names, "tpir", "fpir") == [0.01]
    assert operating_points(names, "recall", "iou") == []
