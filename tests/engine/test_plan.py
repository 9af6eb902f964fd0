"""Loading plans: the model, the errors with file and line, event checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.conditions import AllOf, AnyOf, Count, InStage, Performed, Reached
from consumer.errors import PlanError
from consumer.plan import Placeholder, Template, check_event, load_plan
from tests.engine.helpers import EVENTS, event, load_text, plan_with

REPO = Path(__file__).resolve().parents[2]

GOOD = (
    EVENTS
    + """\
lifecycles:
  main:
    stages:
      - name: first
        when: Page:Viewed
      - name: second
        when:
          count: Order:Completed
          gte: 2
          within: 14d
"""
)


def line_of(text: str, marker: str) -> int:
    """Return the 1-based line of the first line containing ``marker``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in the text")


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(PlanError) as caught:
        load_text(tmp_path, text)
    return str(caught.value)


def test_default_plan_has_the_seed_lifecycle() -> None:
    """The shipped plan has the six seed stages and the issue's conditions."""
    plan = load_plan(REPO / "plans" / "default.yaml")
    (lifecycle,) = plan.lifecycles
    assert lifecycle.name == "customer"
    assert lifecycle.stage_names == (
        "visit",
        "subscriber",
        "qualified_lead",
        "customer",
        "retained_customer",
        "advocate",
    )
    assert plan.enforcement == "report"
    qualified = lifecycle.stages[2].rules[0].when
    assert isinstance(qualified, AnyOf)
    assert (
        Count(
            "Product:Viewed",
            qualified.conditions[0].thresholds,  # type: ignore[union-attr]
            within_ms=14 * 86_400_000,
        )
        == qualified.conditions[0]
    )
    retained = lifecycle.stages[4].rules[0].when
    assert isinstance(retained, AllOf)
    assert retained.conditions[0] == InStage(
        "customer", "customer", 30 * 86_400_000, True
    )
    advocate = lifecycle.stages[5].rules[0].when
    assert isinstance(advocate, AllOf)
    assert advocate.conditions[0] == Reached("customer", "customer")
    assert plan.sync.managed_segments == {
        f"lifecycle:{name}" for name in lifecycle.stage_names
    }
    assert lifecycle.stages[3].segments == ("lifecycle:customer",)
    since = lifecycle.stages[3].data["lifecycle_stage_since"]
    assert since == Template("{stage_since}", (Placeholder("stage_since"),))
    for name in ("Cart:Updated", "Checkout:Started", "Payment:Failed"):
        assert name in plan.events


def test_a_plain_event_name_is_a_performed_condition(tmp_path: Path) -> None:
    """``when: Page:Viewed`` means the event was performed, ever."""
    plan = load_text(tmp_path, GOOD)
    rule = plan.lifecycles[0].stages[0].rules[0]
    assert rule.when == Performed("Page:Viewed")
    assert rule.rule_id == "first"
    assert rule.sources == {None}


def test_sync_defaults_and_settings(tmp_path: Path) -> None:
    """Sync settings default to 5 s / 60 s and accept durations or seconds."""
    plan = load_text(tmp_path, GOOD)
    assert (plan.sync.debounce_s, plan.sync.max_delay_s) == (5.0, 60.0)
    assert plan.sync.create_profiles is True
    text = GOOD + "sync:\n  debounce: 2m\n  max_delay: 600\n  create_profiles: false\n"
    plan = load_text(tmp_path, text)
    assert (plan.sync.debounce_s, plan.sync.max_delay_s) == (120.0, 600.0)
    assert plan.sync.create_profiles is False


@pytest.mark.parametrize(
    ("change", "marker", "expected"),
    [
        (("lifecycles:", "lifecycle:"), "lifecycle:", "unknown key 'lifecycle'"),
        (("when: Page:Viewed", "whenn: Page:Viewed"), "whenn", "unknown key 'whenn'"),
        (("within: 14d", "within: 14days"), "14days", "not a duration"),
        (("within: 14d", "within: 99999999999999999999d"), "9999d", "at most 36500d"),
        (("within: 14d", "withinn: 14d"), "count: Order", "unknown key 'withinn'"),
        (("gte: 2", "gte: 2.5"), "gte: 2.5", "whole number"),
        (("  Page:Viewed:", "  page_viewed:"), "page_viewed", "Category:Name"),
        (("name: second", "name: Second"), "Second", "lower_snake_case"),
        (("name: second", "name: first"), "name: first\n", "appears twice"),
    ],
)
def test_load_errors_name_file_and_line(
    tmp_path: Path, change: tuple[str, str], marker: str, expected: str
) -> None:
    """Each malformed plan fails with ``file:line: what is wrong``."""
    old, new = change
    text = GOOD.replace(old, new, 1)
    message = load_error(tmp_path, text)
    marker_line = line_of(text, marker.strip("\n"))
    if marker == "name: first\n":
        marker_line = [
            n for n, x in enumerate(text.splitlines(), 1) if "name: first" in x
        ][1]
    assert message.startswith(f"{tmp_path / 'plan.yaml'}:{marker_line}: "), message
    assert expected in message


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    """A key given twice in one mapping is refused (YAML would keep the last)."""
    text = GOOD.replace(
        "        when: Page:Viewed\n", "        when: Page:Viewed\n" * 2
    )
    message = load_error(tmp_path, text)
    assert f":{line_of(text, 'when: Page:Viewed') + 1}: duplicate key 'when'" in message


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    """Broken YAML reports the line the parser stopped at."""
    text = GOOD.replace("      - name: second", "      - name: [second")
    message = load_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "plan.yaml") + ":")
    assert "not valid YAML" in message


def test_condition_needs_exactly_one_kind(tmp_path: Path) -> None:
    """A condition naming two kinds (performed and count) is refused."""
    text = GOOD.replace(
        "count: Order:Completed",
        "count: Order:Completed\n          performed: Page:Viewed",
    )
    message = load_error(tmp_path, text)
    assert f":{line_of(text, 'count: Order')}: a condition needs exactly one" in message


def test_stage_references_are_checked(tmp_path: Path) -> None:
    """in_stage and reached must name a stage of the (given) lifecycle."""
    text = GOOD.replace("when: Page:Viewed", "when: {reached: third}")
    assert "'third', which is not a stage of main" in load_error(tmp_path, text)
    text = GOOD.replace(
        "when: Page:Viewed", "when: {in_stage: first, lifecycle: other}"
    )
    assert "there is no lifecycle 'other'" in load_error(tmp_path, text)


def test_rule_sources_must_match_the_direction(tmp_path: Path) -> None:
    """A forward rule from a later stage is refused and hints at regression."""
    stages = """\
    - name: first
      when: Page:Viewed
    - name: second
      rules:
        - id: back
          from: [first]
          regression: true
          when: Referral:Sent
    """
    with pytest.raises(PlanError, match="must come from a later stage"):
        plan_with(tmp_path, stages)
    stages = """\
    - name: first
      rules:
        - id: up
          from: [second]
          when: Referral:Sent
    - name: second
      when: Page:Viewed
    """
    with pytest.raises(PlanError, match="mark it regression"):
        plan_with(tmp_path, stages)


def test_rule_ids_are_unique(tmp_path: Path) -> None:
    """Two rules with one id are refused, naming the first one's line."""
    stages = """\
    - name: first
      when: Page:Viewed
    - name: second
      rules:
        - id: first
          when: Referral:Sent
    """
    with pytest.raises(PlanError, match=r"rule id 'first' is already used on line \d+"):
        plan_with(tmp_path, stages)


def test_templates_are_parsed_and_checked(tmp_path: Path) -> None:
    """Custom data templates parse into parts; unknown placeholders fail."""
    crisp = """\
    crisp:
      segments: ["lc:{lifecycle}:{stage}"]
      data:
        stage: "{stage}"
        orders: "{count:Order:Completed}"
        spent: "{sum:Order:Completed:amount} dollars {{total}}"
        vip: true
    """
    stages = "- name: first\n  when: Page:Viewed\n"
    plan = plan_with(tmp_path, stages, crisp=crisp)
    stage = plan.lifecycles[0].stages[0]
    assert stage.segments == ("lc:main:first",)
    assert stage.data["vip"] is True
    spent = stage.data["spent"]
    assert isinstance(spent, Template)
    assert spent.parts == (
        Placeholder("sum", "Order:Completed", "amount"),
        " dollars {total}",
    )
    with pytest.raises(PlanError, match=r"unknown placeholder \{since\}"):
        plan_with(
            tmp_path,
            stages,
            crisp=crisp.replace('stage: "{stage}"', 'stage: "{since}"'),
        )
    with pytest.raises(PlanError, match="may only use"):
        plan_with(tmp_path, stages, crisp=crisp.replace("{lifecycle}", "{stage_since}"))
    with pytest.raises(PlanError, match="must be lower-case"):
        plan_with(tmp_path, stages, crisp=crisp.replace("vip:", "VIP:"))


def test_check_event_verdicts(tmp_path: Path) -> None:
    """Unplanned, misnamed and malformed events get the right reason tag."""
    plan = load_text(
        tmp_path,
        GOOD.replace(
            "      amount: number", "      amount: {type: number, required: true}"
        ),
    )
    assert check_event(plan, event("Page:Viewed", 0)).problem is None
    verdict = check_event(plan, event("order.completed", 0))
    assert (verdict.accepted, verdict.reason) == (True, "near_miss")
    assert "'Order:Completed'" in (verdict.problem or "")
    assert check_event(plan, event("Order Completed", 0)).reason == "near_miss"
    assert check_event(plan, event("Cart:Updated", 0)).reason == "unknown_event"
    assert check_event(plan, event("cart-updated", 0)).reason == "bad_name"
    missing = check_event(plan, event("Order:Completed", 0))
    assert missing.reason == "missing_property"
    bad = check_event(plan, event("Order:Completed", 0, amount="12"))
    assert bad.reason == "bad_property"
    assert (
        check_event(plan, event("Order:Completed", 0, amount=True)).reason
        == "bad_property"
    )
    assert check_event(
        plan, event("Order:Completed", 0, amount=3, other="undeclared")
    ).accepted


def test_dead_letter_enforcement_refuses(tmp_path: Path) -> None:
    """Under dead_letter a problem makes the event not accepted."""
    plan = load_text(tmp_path, "enforcement: dead_letter\n" + GOOD)
    assert not check_event(plan, event("Cart:Updated", 0)).accepted
    assert check_event(plan, event("Page:Viewed", 0)).accepted
    with pytest.raises(PlanError, match="report or dead_letter"):
        load_text(tmp_path, "enforcement: drop\n" + GOOD)


def test_a_plan_nested_too_deeply_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("events: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(PlanError, match=f"{path}: nested too deeply"):
        load_plan(path)
