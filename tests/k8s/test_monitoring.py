"""Alert rules and the dashboard parse, cover the issue's alerts, and name only listed metrics.

docs/metrics.md is the one list of metric names; this holds the rules, the dashboard and the
list itself to it: every PromQL expression parses (promql-parser, the Prometheus grammar), every
metric it selects is in the list, every listed metric that is marked "code" is made in the code
under its OpenTelemetry name, and its Prometheus name is the standard translation of that name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import promql_parser
import pytest
import yaml

from tests.k8s.conftest import REPO

RULES = REPO / "k8s" / "monitoring" / "yibao-sidecar.rules.yaml"
DASHBOARD = REPO / "k8s" / "monitoring" / "yibao-sidecar.dashboard.json"
METRICS_MD = REPO / "docs" / "metrics.md"
OPERATIONS_MD = REPO / "docs" / "operations.md"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
UNIT_SUFFIX = {"": "", "ms": "_milliseconds", "s": "_seconds", "d": "_days"}


@dataclass(frozen=True)
class Listed:
    prometheus: str
    otel: str
    kind: str
    unit: str
    status: str
    made_by: str


def listed_metrics() -> dict[str, Listed]:
    rows: dict[str, Listed] = {}
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`yibao_"):
            name = cells[0].strip("`")
            rows[name] = Listed(
                name, cells[1].strip("`"), cells[2], cells[3], cells[5], cells[6].strip("`")
            )
    return rows


def selected_metrics(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (walks the parsed tree)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.add(node.name)
        for attribute in ("lhs", "rhs", "expr", "args", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            for item in child if isinstance(child, list) else [child]:
                if isinstance(item, promql_parser.Expr):
                    walk(item)

    walk(promql_parser.parse(expr))
    return found


def series_to_metric(series: str) -> str:
    listed = listed_metrics()
    if series in listed:
        return series
    for suffix in HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if base != series and base in listed and listed[base].kind == "histogram":
            return base
    raise AssertionError(f"{series} is not in docs/metrics.md")


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable.get("query", ""))
        if inner:
            yield f"variable {variable['name']}", inner.group(1)


def test_the_metrics_list_is_well_formed_and_translates_names_the_standard_way() -> None:
    listed = listed_metrics()
    assert len(listed) >= 9
    for metric in listed.values():
        assert metric.kind in {"counter", "histogram", "gauge"}, metric
        assert metric.status in {"code", "assumed"}, metric
        expected = metric.otel.replace(".", "_") + UNIT_SUFFIX[metric.unit]
        expected += "_total" if metric.kind == "counter" else ""
        assert metric.prometheus == expected, metric


def test_metrics_marked_code_are_made_by_the_module_named() -> None:
    for metric in listed_metrics().values():
        if metric.status != "code":
            continue
        source = (REPO / metric.made_by).read_text(encoding="utf-8")
        assert f'"{metric.otel}"' in source, f"{metric.otel} is not made in {metric.made_by}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_parses_names_listed_metrics_and_points_to_the_runbook(
    rule: dict[str, Any],
) -> None:
    assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    metrics = selected_metrics(rule["expr"])
    assert metrics, rule["alert"]
    for series in metrics:
        series_to_metric(series)
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert (REPO / page) == OPERATIONS_MD
    headings = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS_MD.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    assert anchor in headings, f"docs/operations.md has no section #{anchor}"


def test_the_issue_alerts_are_all_there() -> None:
    by_metric: dict[str, set[str]] = {}
    for rule in alert_rules():
        for series in selected_metrics(rule["expr"]):
            by_metric.setdefault(series_to_metric(series), set()).add(rule["alert"])
    for needed in (
        "yibao_hsm_logged_in",  # HSM login lost
        "yibao_platform_breaker_open",  # breaker open
        "yibao_audit_spool_records",  # audit spool non-empty
        "yibao_certificate_expiry_days",  # certificate expiring within 30 days
        "yibao_rpc_calls_total",  # error-rate spike
    ):
        assert needed in by_metric, needed
    thresholds = [
        rule["expr"] for rule in alert_rules() if "yibao_certificate_expiry_days" in rule["expr"]
    ]
    assert any(expr.rstrip().endswith("< 30") for expr in thresholds)


@pytest.mark.parametrize(("where", "expr"), list(dashboard_queries()), ids=lambda v: str(v)[:40])
def test_each_dashboard_query_parses_and_names_listed_metrics(where: str, expr: str) -> None:
    metrics = selected_metrics(expr)
    assert metrics, where
    for series in metrics:
        series_to_metric(series)


def test_the_dashboard_shows_every_metric_an_alert_watches() -> None:
    shown = {series_to_metric(s) for _, e in dashboard_queries() for s in selected_metrics(e)}
    alerted = {
        series_to_metric(s) for rule in alert_rules() for s in selected_metrics(rule["expr"])
    }
    assert alerted <= shown
