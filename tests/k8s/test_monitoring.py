"""Monitoring: the PodMonitor, the PrometheusRule and the dashboard, against the metrics list.

docs/metrics.md is the one list of metric names; this holds the rules, the dashboard and the
list itself to it: every PromQL expression parses (promql-parser, the Prometheus grammar), every
metric it selects is in the list, every listed metric that is marked "code" is made in the code
under its OpenTelemetry name, and its Prometheus name is the standard translation of that name.
The Prometheus Operator's objects validate against their CRD schemas (tests/k8s/schemas/), the
rules group only by labels the PodMonitor's scrape attaches, and ``promtool`` (Debian's
``prometheus`` package) checks the rules and proves each alert fires on sample series.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest
import yaml

from tests.k8s.conftest import REPO, SIDECAR, Rendered

MONITORING = REPO / "k8s" / "components" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "yibao-sidecar.dashboard.json"
PROMTOOL_TESTS = Path(__file__).with_name("alerts.promtool.yaml")
SCHEMAS = Path(__file__).with_name("schemas")
METRICS_MD = REPO / "docs" / "metrics.md"
OPERATIONS_MD = REPO / "docs" / "operations.md"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
UNIT_SUFFIX = {"": "", "s": "_seconds"}
# What the Prometheus Operator's scrape configuration for a PodMonitor attaches to every series
# (without relabelings of the PodMonitor's own): the target's labels.
SCRAPE_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance"}


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
        if len(cells) == 7 and cells[0].startswith(("`yibao_", "`rpc_")):
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


def prometheus_rule() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return document


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]]


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
        "yibao_certificate_expiry_seconds",  # certificate expiring within 30 days
        "rpc_server_call_duration_seconds",  # error-rate spike (its _count: the calls)
    ):
        assert needed in by_metric, needed
    thresholds = [
        rule["expr"] for rule in alert_rules() if "yibao_certificate_expiry_seconds" in rule["expr"]
    ]
    assert any(expr.rstrip().endswith("< 30 * 86400") for expr in thresholds)


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


# ------------------------------------------------------------ the Prometheus Operator's objects


def strict(schema: Any) -> Any:
    """``schema`` refusing unknown fields, as ``kubectl apply`` with strict field validation."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    path = SCHEMAS / f"{kind.lower()}-monitoring.coreos.com-v1.json"
    schema = strict(json.loads(path.read_text(encoding="utf-8")))
    # (no check_schema: the CRDs' patterns are Go regular expressions, e.g. "^(?i)(abort|warn)?$",
    # which Python's re refuses; only patterns of fields we set are ever evaluated)
    return jsonschema.Draft202012Validator(schema)


def crd_errors(obj: dict[str, Any]) -> list[str]:
    validator = crd_validator(obj["kind"])
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("kind", ["PodMonitor", "PrometheusRule"])
def test_the_operator_objects_are_valid_for_their_crd_schemas(
    rendered: Rendered, kind: str
) -> None:
    obj = rendered.one(kind)
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert crd_errors(obj) == []


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("PodMonitor", ["spec", "podMetricEndpoints"], [{"port": "metrics"}]),  # misspelt
        ("PodMonitor", ["spec", "podMetricsEndpoints", 0, "scheme"], "ftp"),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "for"], "two minutes"),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "expresion"], "up == 0"),
    ],
)
def test_the_crd_schemas_refuse_a_broken_object(
    prod: Rendered, kind: str, path: list[Any], value: Any
) -> None:
    obj = copy.deepcopy(prod.one(kind))
    node: Any = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert crd_errors(obj)


def test_the_podmonitor_scrapes_the_sidecars_metrics_port_on_every_pod(rendered: Rendered) -> None:
    monitor = rendered.one("PodMonitor")["spec"]
    pod_labels = rendered.workload["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "namespaceSelector" not in monitor  # the PodMonitor's own namespace: the pods'
    (endpoint,) = monitor["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in rendered.container(SIDECAR)["ports"]}
    listen = rendered.sidecar_config["telemetry"]["prometheus"]["listen"]
    assert ports[endpoint["port"]] == int(listen.rpartition(":")[2])
    assert endpoint.get("path", "/metrics") == "/metrics"
    # nothing that would drop or overwrite the target labels the rules group by
    assert not endpoint.get("honorLabels")
    assert "relabelings" not in endpoint and "metricRelabelings" not in endpoint
    assert "podTargetLabels" not in monitor and "jobLabel" not in monitor


def _grouping_labels(node: Any) -> Iterator[tuple[str, list[str]]]:
    modifier = getattr(node, "modifier", None)
    if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
        yield str(modifier.type), list(modifier.labels)
    for attribute in ("lhs", "rhs", "expr", "args"):
        child = getattr(node, attribute, None)
        for item in child if isinstance(child, list) else [child]:
            if isinstance(item, promql_parser.Expr):
                yield from _grouping_labels(item)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_groups_by_labels_the_podmonitor_scrape_attaches(rule: dict[str, Any]) -> None:
    grouped = list(_grouping_labels(promql_parser.parse(rule["expr"])))
    assert grouped, "every alert aggregates (one alert per pod or namespace, not per series)"
    attributes = {"certificate"}  # the metric's own label, documented in docs/metrics.md
    for kind, labels in grouped:
        assert "By" in kind, f"{rule['alert']}: group with by (...), not without"
        assert "namespace" in labels, rule["alert"]
        assert set(labels) <= SCRAPE_LABELS | attributes, rule["alert"]
    summary = rule["annotations"]["summary"]
    for label in re.findall(r"\$labels\.(\w+)", summary):
        assert all(label in labels for _, labels in grouped), (rule["alert"], label)


def test_the_dashboard_is_a_configmap_generated_from_its_json(rendered: Rendered) -> None:
    (configmap,) = [
        c
        for c in rendered.of_kind("ConfigMap")
        if c["metadata"]["name"] == "yibao-sidecar-dashboard"
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_the_rendered_rules_are_the_rule_file(rendered: Rendered) -> None:
    assert rendered.one("PrometheusRule")["spec"] == prometheus_rule()["spec"]


# ------------------------------------------------------------------ promtool


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: Debian's prometheus package (scripts/bootstrap.sh)")
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def write_rules(directory: Path, groups: list[dict[str, Any]]) -> None:
    """The rule groups as a rule file, and the promtool tests beside it (they name rules.yaml)."""
    without_annotations = copy.deepcopy(groups)
    for group in without_annotations:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # promtool would compare them; check rules covers them
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": without_annotations}))
    shutil.copy(PROMTOOL_TESTS, directory / PROMTOOL_TESTS.name)


def test_promtool_accepts_the_rules_annotations_included(tmp_path: Path) -> None:
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump({"groups": prometheus_rule()["spec"]["groups"]}))
    result = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_sample_series_and_only_then(tmp_path: Path) -> None:
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text(encoding="utf-8"))
    proven = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert proven == {rule["alert"] for rule in alert_rules()}  # every alert, the cert ones too
    write_rules(tmp_path, prometheus_rule()["spec"]["groups"])
    result = run_promtool("test", "rules", PROMTOOL_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_tests_fail_when_an_alert_threshold_is_wrong(tmp_path: Path) -> None:
    """The rules test can fail: a 20-day expiry threshold misses the 29-day certificate."""
    groups = copy.deepcopy(prometheus_rule()["spec"]["groups"])
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = rule["expr"].replace("< 30 * 86400", "< 20 * 86400")
    write_rules(tmp_path, groups)
    result = run_promtool("test", "rules", PROMTOOL_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "YibaoSidecarCertificateExpiringSoon" in result.stdout + result.stderr
