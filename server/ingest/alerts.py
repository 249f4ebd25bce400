"""Deciding which alerts a health sample opens and clears.

Two sources: faults the device reports (``source="device"``, keyed by code) and
the server's threshold rules (``source="rule"``, keyed by code and metric, so a
prefix rule such as ``disk_percent:*`` watches each disk on its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from server.config import ThresholdRule
from shared.models import Fault


@dataclass(frozen=True)
class AlertKey:
    """What makes an alert the same alert: source, code, and (for rules) the metric."""

    source: str
    code: str
    metric: str | None = None


@dataclass(frozen=True)
class AlertDetails:
    """What a newly opened alert says."""

    severity: str
    message: str


@dataclass
class AlertPlan:
    """Alerts to open (with their details) and to clear."""

    to_open: dict[AlertKey, AlertDetails] = field(default_factory=dict)
    to_clear: set[AlertKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.to_open or self.to_clear)


def rule_matches(pattern: str, metric: str) -> bool:
    """Whether a rule's metric pattern names ``metric`` (``*`` at the end: a prefix)."""
    if pattern.endswith("*"):
        return metric.startswith(pattern[:-1])
    return metric == pattern


def rule_code(rule: ThresholdRule) -> str:
    """The alert code of a rule: its own, or one derived from its bound."""
    if rule.code:
        return rule.code
    return "threshold_above" if rule.above is not None else "threshold_below"


def rule_violation(rule: ThresholdRule, value: float) -> str | None:
    """A message when ``value`` is past the rule's bound, else ``None``."""
    if rule.above is not None and value > rule.above:
        return f"{value:g} above {rule.above:g}"
    if rule.below is not None and value < rule.below:
        return f"{value:g} below {rule.below:g}"
    return None


@dataclass(frozen=True, slots=True)
class ThresholdCheck:
    """One rule applied to one metric name (rules matched to a sample's names once)."""

    metric: str
    rule: ThresholdRule
    key: AlertKey


def match_rules(rules: Iterable[ThresholdRule], names: Iterable[str]) -> list[ThresholdCheck]:
    """The checks the rules make on metrics of these names, in rule order."""
    names = list(names)
    return [
        ThresholdCheck(name, rule, AlertKey("rule", rule_code(rule), name))
        for rule in rules
        for name in names
        if rule_matches(rule.metric, name)
    ]


def evaluate_checks(
    checks: Iterable[ThresholdCheck], metrics: Mapping[str, float]
) -> tuple[dict[AlertKey, AlertDetails], set[AlertKey]]:
    """Which rule alerts the metrics violate, and which they satisfy.

    A metric absent from the sample neither raises nor clears its alerts.
    """
    violated: dict[AlertKey, AlertDetails] = {}
    satisfied: set[AlertKey] = set()
    for check in checks:
        value = metrics.get(check.metric)
        if value is None:
            continue
        key, rule = check.key, check.rule
        problem = rule_violation(rule, value)
        if problem is None:
            satisfied.add(key)
        elif key not in violated:
            violated[key] = AlertDetails(rule.severity, f"{check.metric} {problem}")
    satisfied -= violated.keys()
    return violated, satisfied


def evaluate_thresholds(
    rules: Iterable[ThresholdRule], metrics: Mapping[str, float]
) -> tuple[dict[AlertKey, AlertDetails], set[AlertKey]]:
    """Which rule alerts the metrics violate, and which they satisfy.

    A metric absent from the sample neither raises nor clears its alerts.
    """
    return evaluate_checks(match_rules(rules, metrics), metrics)


def plan_for_sample(
    open_alerts: set[AlertKey],
    faults: Iterable[Fault],
    metrics: Mapping[str, float],
    rules: Iterable[ThresholdRule],
) -> AlertPlan:
    """The alerts a sample opens and clears, given the device's open alerts.

    The sample's fault list is the device's full current set: an open device
    alert whose code is absent is cleared.
    """
    return plan_for_checks(open_alerts, faults, metrics, match_rules(rules, metrics))


def plan_for_checks(
    open_alerts: set[AlertKey],
    faults: Iterable[Fault],
    metrics: Mapping[str, float],
    checks: Iterable[ThresholdCheck],
) -> AlertPlan:
    """:func:`plan_for_sample` with the rules already matched to the metric names."""
    plan = AlertPlan()
    reported: dict[AlertKey, AlertDetails] = {}
    for fault in faults:
        reported.setdefault(
            AlertKey("device", fault.code), AlertDetails(fault.severity, fault.message)
        )
    for key, details in reported.items():
        if key not in open_alerts:
            plan.to_open[key] = details
    if open_alerts:
        plan.to_clear.update(k for k in open_alerts if k.source == "device" and k not in reported)
    violated, satisfied = evaluate_checks(checks, metrics)
    for key, details in violated.items():
        if key not in open_alerts:
            plan.to_open[key] = details
    if open_alerts:
        plan.to_clear.update(satisfied & open_alerts)
    return plan


def apply_plan(open_alerts: set[AlertKey], plan: AlertPlan) -> set[AlertKey]:
    """The open alerts after a plan (to fold several samples of one batch)."""
    return (open_alerts - plan.to_clear) | plan.to_open.keys()
