"""Carry a contact's state over to another compiled plan, by name.

Used when a state made under one plan meets another (a plan edit while the
old plan is still loaded). Stages, history and rules are matched by name and
rule id; a tracker is kept when the new plan has one with the same key
(kind, event, filter), so a count survives a changed threshold; trackers the
new plan adds start from nothing. An "or beyond" time the old state did not
keep is taken as the entry time of the current stage, which may be later
than the truth. For exact results after a plan change, replay the topic.
"""

from __future__ import annotations

from consumer.engine_compile import Compiled
from consumer.engine_state import ContactState
from consumer.engine_trackers import CountTracker, WindowTracker


def migrate(old: ContactState, layout: Compiled) -> ContactState:
    """Return ``old`` laid out for ``layout``."""
    source = old.layout
    assert source is not None
    new = ContactState(old.contact_id)
    new.bind(layout)
    new.clock_ms = old.clock_ms
    new.first_ms = old.first_ms
    new.recent = old.recent
    for target in layout.lifecycles:
        previous = next((x for x in source.lifecycles if x.name == target.name), None)
        if previous is None or old.stage[previous.index] < 0:
            continue
        stage_name = previous.stage_names[old.stage[previous.index]]
        if stage_name not in target.stage_names:
            continue
        stage = target.stage_names.index(stage_name)
        rule_ids = {rule.rule_id: rule.index for rule in target.rules}
        moves = [
            (rule_ids[previous.rules[rule_index].rule_id], at_ms)
            for rule_index, at_ms in old.history[previous.index]
            if previous.rules[rule_index].rule_id in rule_ids
        ]
        entered = old.entered[previous.index]
        if not moves or target.rules[moves[-1][0]].to_stage != stage:
            into = [rule.index for rule in target.rules if rule.to_stage == stage]
            if not into:
                continue
            moves.append((into[0], entered))
        index = target.index
        new.stage[index] = stage
        new.entered[index] = entered
        new.history[index] = tuple(moves)
        kept = dict(zip(previous.since_stages, old.since[previous.index], strict=True))
        new.since[index] = tuple(
            _since(
                kept,
                previous.stage_names,
                target.stage_names,
                slot_stage,
                stage,
                entered,
            )
            for slot_stage in target.since_stages
        )
    by_key = {tracker.key: tracker for tracker in source.trackers}
    for tracker in layout.trackers:
        found = by_key.get(tracker.key)
        if found is None:
            continue
        value = old.values[found.slot]
        if isinstance(tracker, CountTracker) and tracker.cap is not None:
            value = min(value, tracker.cap)
        if isinstance(tracker, WindowTracker):
            value = value[-tracker.keep :]
        new.values[tracker.slot] = value
    return new


def _since(
    kept: dict[int, int | None],
    old_names: tuple[str, ...],
    new_names: tuple[str, ...],
    slot_stage: int,
    current: int,
    entered: int,
) -> int | None:
    if current < slot_stage:
        return None
    name = new_names[slot_stage]
    if name in old_names and old_names.index(name) in kept:
        found = kept[old_names.index(name)]
        if found is not None:
            return found
    return entered
