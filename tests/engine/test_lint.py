"""The plan linter: what loads but is probably a mistake."""

from __future__ import annotations

from pathlib import Path

from consumer.plan import load_plan
from consumer.plan_lint import Finding, lint_plan
from tests.engine.helpers import plan_with

REPO = Path(__file__).resolve().parents[2]


def messages(findings: list[Finding], severity: str) -> list[str]:
    return [f.message for f in findings if f.severity == severity]


def test_shipped_plans_are_clean() -> None:
    """The default and churn plans have no error and no warning."""
    for name in ("default.yaml", "churn.yaml"):
        assert lint_plan(load_plan(REPO / "plans" / name)) == []


def test_unknown_events_in_rules_and_templates(tmp_path: Path) -> None:
    """A rule or template that uses an undeclared event is an error, with a hint."""
    crisp = 'crisp:\n  data:\n    n: "{count:Cart:Updated}"\n'
    stages = """\
    - name: first
      when:
        any: [Page:Viewed, order:completed]
    """
    plan = plan_with(tmp_path, stages, crisp=crisp)
    errors = messages(lint_plan(plan), "error")
    assert any(
        "'order:completed', which is not in the plan's events "
        "(did you mean 'Order:Completed'?)" in m
        for m in errors
    )
    assert any("counts 'Cart:Updated'" in m for m in errors)
    line = next(f.line for f in lint_plan(plan) if "order:completed" in f.message)
    lines = (tmp_path / "plan.yaml").read_text().splitlines()
    assert "order:completed" in lines[line - 1]


def test_unreachable_stages(tmp_path: Path) -> None:
    """A stage without rules, or whose rule needs a later stage, is unreachable."""
    stages = """\
    - name: first
      when: Page:Viewed
    - name: lonely
    - name: needs_later
      when:
        all: [Referral:Sent, {reached: last}]
    - name: last
      when: Order:Completed
    """
    findings = lint_plan(plan_with(tmp_path, stages))
    errors = messages(findings, "error")
    assert "stage 'lonely' of main cannot be reached: no rule enters it" in errors
    assert "stage 'needs_later' of main cannot be reached: no rule can fire" in errors
    assert not any("'last'" in m for m in errors)
    assert any(
        "rule 'needs_later' can never hold" in m for m in messages(findings, "warning")
    )


def test_reached_under_any_does_not_make_a_stage_unreachable(tmp_path: Path) -> None:
    """Only stage conditions that must hold narrow a rule's sources."""
    stages = """\
    - name: first
      when:
        any: [Page:Viewed, {reached: second}]
    - name: second
      when: Order:Completed
    """
    assert lint_plan(plan_with(tmp_path, stages)) == []


def test_names_that_differ_only_by_case(tmp_path: Path) -> None:
    """Events, rule ids and segments that collide ignoring case are errors."""
    top = "  Order:COMPLETED:\n"
    stages = """\
    - name: first
      rules:
        - id: Signup
          when: Page:Viewed
      crisp: {segments: ["VIP"]}
    - name: second
      rules:
        - id: signup
          when: Order:Completed
      crisp: {segments: ["vip"]}
    """
    plan_with(tmp_path, stages)
    text = (
        (tmp_path / "plan.yaml")
        .read_text()
        .replace("  Order:Completed:\n", top + "  Order:Completed:\n", 1)
    )
    (tmp_path / "plan.yaml").write_text(text)
    plan = load_plan(tmp_path / "plan.yaml")
    errors = messages(lint_plan(plan), "error")
    assert any(
        "event 'Order:Completed' differs from 'Order:COMPLETED'" in m for m in errors
    )
    assert any("rule id 'signup' differs from 'Signup'" in m for m in errors)
    assert any("segment 'vip' differs from 'VIP'" in m for m in errors)


def test_inactivity_without_guard_is_a_warning(tmp_path: Path) -> None:
    """not_performed with guard: false is flagged, but is not an error."""
    stages = """\
    - name: first
      when: Page:Viewed
    - name: gone
      when:
        not_performed: Page:Viewed
        within: 30d
        guard: false
    """
    findings = lint_plan(plan_with(tmp_path, stages))
    assert messages(findings, "error") == []
    assert any(
        "inactivity without the guard also matches contacts younger than 30d" in m
        for m in messages(findings, "warning")
    )
    guarded = lint_plan(
        plan_with(tmp_path, stages.replace("guard: false", "guard: true"))
    )
    assert guarded == []


def test_predicates_that_cannot_match_the_declared_type(tmp_path: Path) -> None:
    """Ordering a text property, summing it, or an undeclared property."""
    stages = """\
    - name: first
      when:
        performed: Order:Completed
        where: {sku: {gt: 3}, colour: red}
    - name: second
      when:
        sum: Order:Completed
        of: sku
        gte: 10
    """
    findings = lint_plan(plan_with(tmp_path, stages))
    errors = messages(findings, "error")
    assert any(
        "compares Order:Completed property 'sku' as a number" in m for m in errors
    )
    assert len([m for m in errors if "'sku'" in m]) == 2
    assert any(
        "'colour', which Order:Completed does not declare" in m
        for m in messages(findings, "warning")
    )


def test_unmanaged_segments_and_shared_data_keys(tmp_path: Path) -> None:
    """A stage segment outside managed_segments is a warning."""
    top = "sync:\n  managed_segments: [a]\n"
    stages = """\
    - name: first
      when: Page:Viewed
      crisp: {segments: [a, b]}
    """
    findings = lint_plan(plan_with(tmp_path, stages, top=top))
    assert messages(findings, "warning") == [
        "segment 'b' of stage 'first' is not managed: the service will add it "
        "but never remove it"
    ]
