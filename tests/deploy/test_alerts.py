"""The Prometheus side of deploy/: rules and config pass promtool, the alert unit tests pass,
and every metric the rules and the dashboard query is one the service exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragline.ops.slo import THRESHOLDS, Threshold

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "ragline.json"

# The metrics served at GET /metrics, with their labels: the contract between the service and
# deploy/. A histogram `h` is queried as h_bucket (label `le`), h_sum and h_count.
HISTOGRAMS: dict[str, set[str]] = {
    "ragline_retrieval_duration_seconds": set(),
    "ragline_embedding_duration_seconds": {"source"},
    "ragline_llm_time_to_first_token_seconds": set(),
    "ragline_request_duration_seconds": {"route"},
    "ragline_context_utilisation_ratio": set(),
    "ragline_chunks_per_request": set(),
}
COUNTERS: dict[str, set[str]] = {
    "ragline_requests_total": {"route", "outcome"},
    "ragline_requests_shed_total": set(),
    "ragline_errors_total": {"stage"},
    "ragline_empty_retrievals_total": set(),
    "ragline_truncated_answers_total": set(),
    "ragline_chunks_returned_total": set(),
    "ragline_chunks_cited_total": set(),
    "ragline_cache_requests_total": {"cache", "result"},
    "ragline_ingest_jobs_total": {"outcome"},
    "ragline_prompt_injection_suspected_total": set(),
    "ragline_spans_dropped_total": {"exporter"},
}
GAUGES: dict[str, set[str]] = {
    "ragline_ingest_jobs": {"state"},
    "ragline_index_sync_lag_entries": set(),
    "ragline_index_sync_lag_seconds": set(),
    "ragline_index_sync_failures": set(),
}
CATALOGUE = {**HISTOGRAMS, **COUNTERS, **GAUGES}

METRIC = re.compile(r"\bragline_[a-z0-9_]+")
COMPARISON = re.compile(r"([<>]=?)\s*([0-9]+(?:\.[0-9]+)?)(?![0-9.\w])")
QUANTILE = re.compile(r"histogram_quantile\(\s*([0-9.]+)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; its absence is a failure with the fix in the message, never a skip."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: run `make promtool` (extracts it from Debian's prometheus package)"
        )
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def series_labels(name: str) -> set[str] | None:
    """The labels of a queried series name, or None when the service does not expose it."""
    if name in COUNTERS or name in GAUGES:
        return CATALOGUE[name]
    base, _, suffix = name.rpartition("_")
    if base in HISTOGRAMS and suffix in ("bucket", "sum", "count"):
        return HISTOGRAMS[base] | ({"le"} if suffix == "bucket" else set())
    return None


def test_alert_rules_pass_promtool_check() -> None:
    """alerts.yml parses, its PromQL is valid and every rule is well-formed."""
    result = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    """Every alert fires on its synthetic series with the expected labels and annotations and
    stays silent on healthy series (deploy/prometheus/alerts_test.yml)."""
    result = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool_check() -> None:
    """prometheus.yml is valid and the rule files it names resolve (checked by promtool too)."""
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_every_alert_is_unit_tested_both_ways() -> None:
    """Each alert has a test case where it fires and one where it is expected silent."""
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    fires = {c["alertname"] for c in checks if c["exp_alerts"]}
    silent = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert names == fires, f"never seen firing: {names - fires}"
    assert names == silent, f"never seen silent: {names - silent}"


def test_every_alert_has_severity_duration_and_runbook() -> None:
    """Alerts carry what on-call needs: a `for`, a severity and summary/description/runbook."""
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    assert [group["name"] for group in rules["groups"]] == ["ragline"]
    for rule in rules["groups"][0]["rules"]:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]


@pytest.mark.parametrize("source", ["alerts.yml", "ragline.json"], ids=["alerts", "dashboard"])
def test_queried_metrics_are_exposed_by_the_service(source: str) -> None:
    """Every ragline_* series in the rules and dashboard is in the catalogue, with its labels."""
    expressions = alert_expressions() if source == "alerts.yml" else dashboard_expressions()
    assert expressions
    for expr in expressions:
        names = METRIC.findall(expr)
        unknown = [n for n in names if series_labels(n) is None]
        assert not unknown, f"not exposed by the service: {unknown} in {expr}"
        allowed = set().union(*(series_labels(n) or set() for n in names))
        for grouping in GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            assert labels <= allowed, f"labels {labels - allowed} not on {names}: {expr}"


def test_dashboard_shows_every_metric() -> None:
    """The dashboard has a panel over each metric of the catalogue."""
    queried = {
        n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        for expr in dashboard_expressions()
        for n in METRIC.findall(expr)
    }
    assert set(CATALOGUE) <= queried, f"no panel for {set(CATALOGUE) - queried}"


def alert_rules() -> dict[str, str]:
    """Each alert's name and expression, as deploy/prometheus/alerts.yml writes them."""
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def thresholds_in(expr: str) -> set[tuple[str, float]]:
    """The comparisons an expression alerts on; `> 0` only guards against no traffic (0/0)."""
    found = {(op, float(number)) for op, number in COMPARISON.findall(expr)}
    return {(op, number) for op, number in found if (op, number) != (">", 0.0)}


def expected_thresholds(slo: Threshold) -> set[tuple[str, float]]:
    """What an alert on `slo` must compare with: below `low` or above `high`, in its units."""
    expected = set()
    if slo.low is not None:
        expected.add(("<", round(slo.low * slo.prometheus_scale, 9)))
    if slo.high is not None:
        expected.add((">", round(slo.high * slo.prometheus_scale, 9)))
    return expected


@pytest.mark.parametrize("slo", THRESHOLDS, ids=lambda slo: slo.alert)
def test_alert_threshold_is_the_one_in_the_slo_table(slo: Threshold) -> None:
    """Each SLO of ops/slo.py (the `ragline metrics` report) has its alert in alerts.yml, and
    the alert fires past the same bounds (latency in seconds there, ms here) and quantile."""
    expr = alert_rules().get(slo.alert)
    assert expr is not None, f"{slo.alert} (for {slo.figure}) is not in alerts.yml"
    found = {(op, round(number, 9)) for op, number in thresholds_in(expr)}
    assert found == expected_thresholds(slo), f"{slo.alert}: {expr}"
    quantiles = {float(q) for q in QUANTILE.findall(expr)}
    assert quantiles == ({slo.quantile} if slo.quantile is not None else set()), expr


def test_every_alert_with_a_threshold_is_in_the_slo_table() -> None:
    """An alert that compares with anything but 0 states an SLO: it must be in ops/slo.py's
    table, so that `ragline metrics` checks the same bound."""
    tabled = {slo.alert for slo in THRESHOLDS}
    with_threshold = {name for name, expr in alert_rules().items() if thresholds_in(expr)}
    assert with_threshold - tabled == set()
