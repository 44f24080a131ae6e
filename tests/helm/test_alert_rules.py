"""The chart's Prometheus alert rules (templates/alerts.yaml), checked offline.

promtool is not available here, so the rules are checked the way it would catch the usual
mistakes: the rendered object is valid (ConfigMap against the Kubernetes schema; the
PrometheusRule's spec against the Prometheus Operator's documented rule fields), every rule
has the fields Prometheus needs, brackets balance, durations parse, and every metric an
expression names is one the code exports (the inference service's ml/serving/metrics.py,
the pipelines' train_platform.registry.metrics_export), with labels and label values those
metrics have.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from train_platform.registry.metrics_export import EVALUATION_METRICS, METRICS

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "train-platform"
SERVING_METRICS = ROOT / "ml" / "serving" / "metrics.py"
NAMESPACE = "train-platform"
ALERTS = "train-platform/templates/alerts.yaml"
RULES_KEY = "train-platform.rules.yaml"
# What the alerts must cover (issue 13): endpoint error rate, p99 latency, input drift,
# failed runs, accuracy drops.
REQUIRED_ALERTS = {"TrainPlatformEndpointErrorRate", "TrainPlatformEndpointLatencyP99", "TrainPlatformInputDrift",
                   "TrainPlatformPipelineRunFailed", "TrainPlatformCandidateAccuracyDrop",
                   "TrainPlatformServedAccuracyLow", "TrainPlatformForgetting", "TrainPlatformTaskFailed"}
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# PromQL words that look like identifiers but are not metric names.
_PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "increase", "by", "on", "and", "or", "unless",
                 "without", "ignoring", "histogram_quantile", "group_left", "group_right", "bool", "offset"}

# The Prometheus Operator's PrometheusRule spec (monitoring.coreos.com/v1, API reference:
# RuleGroup and Rule), the fields this chart may use; unknown fields are refused.
PROMETHEUS_RULE_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["groups"],
    "properties": {"groups": {"type": "array", "minItems": 1, "items": {
        "type": "object", "additionalProperties": False, "required": ["name", "rules"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "interval": {"type": "string", "pattern": _DURATION.pattern},
            "rules": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["expr"],
                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                "properties": {
                    "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                    "record": {"type": "string"},
                    "expr": {"type": "string", "minLength": 1},
                    "for": {"type": "string", "pattern": _DURATION.pattern},
                    "keep_firing_for": {"type": "string", "pattern": _DURATION.pattern},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                }}},
        }}}},
}


def exported_metrics() -> dict[str, dict]:
    """name -> {"labels": set, "type": ...}: the inference service's metrics read from the
    bentoml.metrics.* calls of ml/serving/metrics.py, and the pipeline metrics."""
    found: dict[str, dict] = {}
    for node in ast.walk(ast.parse(SERVING_METRICS.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "Counter", "Histogram", "Gauge"):
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg in ("name", "labelnames", "documentation")}
            found[kwargs["name"]] = {"labels": set(kwargs["labelnames"]), "type": node.func.attr.lower(),
                                     "doc": kwargs["documentation"]}
    assert "tp_predict_requests_total" in found and "tp_input_drift_psi" in found
    for name, (doc, labels) in METRICS.items():
        found[name] = {"labels": set(labels), "type": "gauge", "doc": doc}
    return found


def label_values(metrics: dict[str, dict]) -> dict[tuple[str, str], set[str]]:
    """The values a label can take, where the code says: the outcomes the request counter's
    help lists, correct as the service writes it, the evaluation's headline metrics."""
    outcomes = re.search(r"\(([a-z_, ]+)\)", metrics["tp_predict_requests_total"]["doc"])[1]
    return {("tp_predict_requests_total", "outcome"): {v.strip() for v in outcomes.split(",")},
            ("tp_confirmed_predictions_total", "correct"): {"true", "false"},
            ("tp_evaluation_metric", "metric"): set(EVALUATION_METRICS),
            ("tp_evaluation_baseline_metric", "metric"): set(EVALUATION_METRICS)}


def problems_of(expr: str, metrics: dict[str, dict]) -> list[str]:
    """What promtool-like checks find wrong with ``expr``; empty when none."""
    problems = []
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in pairs.values() and (not stack or stack.pop() != ch):
            problems.append(f"unbalanced {ch!r}")
    problems += [f"unclosed {c!r}" for c in stack]
    for window in re.findall(r"\[([^\]]*)\]", expr):
        if not _DURATION.match(window):
            problems.append(f"range [{window}] is not a duration")

    used: dict[str, set[str]] = {}
    values = label_values(metrics)
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", expr):
        word, matchers = match[1], match[2] or ""
        if word in _PROMQL_WORDS or not word.startswith("tp_"):
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", word)
        metric = metrics.get(word) or (metrics.get(base) if base != word and metrics.get(base, {}).get("type") == "histogram" else None)
        if metric is None:
            problems.append(f"{word} is not a metric the code exports")
            continue
        labels = metric["labels"] | ({"le"} if word.endswith("_bucket") else set())
        used[word] = labels
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
            if label not in labels:
                problems.append(f"{word} has no label {label!r}")
            allowed = values.get((base, label))
            if allowed is not None:
                wanted = value.split("|") if "~" in op else [value]
                problems += [f"{word}{{{label}}} never takes the value {v!r}" for v in wanted if v not in allowed]
    for clause in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        for label in filter(None, (part.strip() for part in clause.split(","))):
            if used and not any(label in labels for labels in used.values()):
                problems.append(f"grouping label {label!r} is on none of {sorted(used)}")
    if not used:
        problems.append("names no metric the code exports")
    return problems


def render_alerts(values: dict) -> dict | None:
    with helm.Chart.load(CHART_DIR) as chart:
        text = chart.render(values, name="train-platform", namespace=NAMESPACE).get(ALERTS, "")
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    assert len(docs) <= 1
    return docs[0] if docs else None


def groups_of(obj: dict) -> list[dict]:
    if obj["kind"] == "PrometheusRule":
        return obj["spec"]["groups"]
    return yaml.safe_load(obj["data"][RULES_KEY])["groups"]


@pytest.fixture(scope="module")
def metrics():
    return exported_metrics()


@pytest.fixture(scope="module", params=["auto", "ConfigMap", "PrometheusRule"])
def rendered(request):
    return request.param, render_alerts({"alerts": {"kind": request.param}})


def test_the_rules_object_is_valid(rendered):
    kind, obj = rendered
    # Offline the cluster serves no monitoring.coreos.com/v1: auto falls back to the ConfigMap.
    assert obj["kind"] == ("PrometheusRule" if kind == "PrometheusRule" else "ConfigMap")
    assert obj["metadata"]["namespace"] == NAMESPACE
    if obj["kind"] == "ConfigMap":
        kubernetes_validate.validate(obj, "1.30", strict=True)
    else:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        # The metadata is ordinary ObjectMeta: checked through an object whose schema is known.
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                                     "1.30", strict=True)
        jsonschema.validate(obj["spec"], PROMETHEUS_RULE_SPEC)
    for group in groups_of(obj):
        jsonschema.validate({"groups": [group]}, PROMETHEUS_RULE_SPEC)


def test_every_rule_is_complete_and_names_only_exported_metrics(rendered, metrics):
    _, obj = rendered
    rules = [rule for group in groups_of(obj) for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert _DURATION.match(rule.get("for", "0s")), rule["alert"]
        assert problems_of(rule["expr"], metrics) == [], (rule["alert"], rule["expr"])
        # Prometheus' own template variables survived Helm's templating.
        assert "$labels" in rule["annotations"]["summary"] or "$value" in rule["annotations"]["summary"]


def test_the_check_catches_broken_expressions(metrics):
    """The expression checker is not a rubber stamp."""
    assert problems_of("rate(tp_predict_requests_total[5m])", metrics) == []
    assert problems_of("histogram_quantile(0.99, sum by (le) (rate(tp_predict_latency_seconds_bucket[5m])))", metrics) == []
    assert "tp_predict_errors_total is not a metric the code exports" in problems_of("rate(tp_predict_errors_total[5m]) > 0", metrics)
    assert "tp_input_drift_psi has no label 'feature'" in problems_of('tp_input_drift_psi{feature="0"} > 0.2', metrics)
    assert ("tp_predict_requests_total{outcome} never takes the value 'failed'"
            in problems_of('rate(tp_predict_requests_total{outcome=~"error|failed"}[5m])', metrics))
    assert "unclosed ')'" in problems_of("sum(rate(tp_predict_requests_total[5m])", metrics)
    assert "range [5 minutes] is not a duration" in problems_of("rate(tp_predict_requests_total[5 minutes])", metrics)
    assert "grouping label 'pod' is on none of ['tp_task_failed']" in problems_of("max by (pod) (tp_task_failed)", metrics)
    assert "tp_task_duration_seconds_bucket is not a metric the code exports" in problems_of(
        "tp_task_duration_seconds_bucket > 1", metrics)  # a gauge has no buckets


def test_thresholds_labels_and_kind_are_values():
    obj = render_alerts({"alerts": {
        "kind": "PrometheusRule", "labels": {"release": "kube-prometheus-stack"}, "alertLabels": {"team": "ml"},
        "endpointErrorRate": {"threshold": 0.02, "for": "5m"}, "endpointLatencyP99": {"seconds": 0.25, "for": "10m"},
        "inputDrift": {"psi": 0.4, "for": "1h"}}})
    assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = {rule["alert"]: rule for group in groups_of(obj) for rule in group["rules"]}
    assert all(rule["labels"]["team"] == "ml" for rule in rules.values())
    assert rules["TrainPlatformEndpointErrorRate"]["expr"].rstrip().endswith("> 0.02")
    assert rules["TrainPlatformEndpointErrorRate"]["for"] == "5m"
    assert rules["TrainPlatformEndpointLatencyP99"]["expr"].rstrip().endswith("> 0.25")
    assert rules["TrainPlatformInputDrift"]["expr"].rstrip().endswith("> 0.4")
    assert render_alerts({"alerts": {"kind": "none"}}) is None


@pytest.mark.parametrize(("values", "where"), [
    ({"alerts": {"kind": "Rules"}}, "/alerts/kind"),
    ({"alerts": {"endpointErrorRate": {"threshold": 5}}}, "/alerts/endpointErrorRate/threshold"),
    ({"alerts": {"inputDrift": {"for": "30 minutes"}}}, "/alerts/inputDrift/for"),
    ({"config": {"pushgatewayUrl": "pushgateway:9091"}}, "/config/pushgatewayUrl"),
    ({"config": {"pushgatewayUrl": "http://user:pw@pushgateway:9091"}}, "/config/pushgatewayUrl"),
])
def test_bad_alert_values_are_refused_with_their_path(values, where):
    with helm.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm.HelmValuesError) as refused:
            chart.validate_schema(chart.merge_values(values))
    assert f"at '{where}'" in str(refused.value)


def test_the_pushgateway_value_reaches_the_configmap_the_airflow_workers_read():
    with helm.Chart.load(CHART_DIR) as chart:
        text = chart.render({"config": {"pushgatewayUrl": "http://prometheus-pushgateway:9091"}},
                            name="train-platform", namespace=NAMESPACE)["train-platform/templates/configmap.yaml"]
    config = yaml.safe_load(text)
    assert config["data"]["TP_PUSHGATEWAY_URL"] == "http://prometheus-pushgateway:9091"
    airflow = yaml.safe_load((ROOT / "helm" / "airflow-values.yaml").read_text())
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in yaml.safe_load(airflow["extraEnvFrom"])
