"""What the engine remembers about one contact.

Per lifecycle: the current stage, when it was entered, the time since when
the contact has been in each stage that an ``in_stage ... or_beyond``
condition asks about, and the last `HISTORY_LIMIT` moves (rule and time; a
move's stage exit is the next move's entry). Per contact: the clock (the
latest time seen), the first event time (the contact's age), the next time
a timer is due, 5-byte keys of the last `RECENT_IDS` event ids, and one value per
tracker of the plan (`consumer.engine_trackers`).

A state is laid out for one compiled plan (``layout``); a state fresh from
`new_state` has no layout until the engine first uses it with a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.engine_compile import Compiled

#: How many recent event ids a state remembers to drop duplicates. A retry
#: that arrives after more than this many other events of the same contact
#: is counted again; the fenced offsets of `consumer.store` catch replays.
RECENT_IDS = 8

#: How many moves per lifecycle the stage history keeps.
HISTORY_LIMIT = 16


@dataclass(frozen=True, slots=True)
class StageVisit:
    """One stay in a stage: entered by ``rule_id`` at ``entered_ms``."""

    stage: str
    rule_id: str
    entered_ms: int
    exited_ms: int | None


class ContactState:
    """One contact's stages, counters and timers; see the module docstring.

    Public: ``contact_id``, ``clock_ms``, `stages`, `history`. The rest is the
    engine's. The engine never changes a state it is given; it returns a new
    one.
    """

    __slots__ = (
        "clock_ms",
        "contact_id",
        "due_ms",
        "entered",
        "first_ms",
        "history",
        "layout",
        "owned",
        "recent",
        "since",
        "stage",
        "values",
    )

    def __init__(self, contact_id: str) -> None:
        self.contact_id = contact_id
        self.clock_ms = 0
        self.first_ms: int | None = None
        self.due_ms: int | None = None
        #: 5-byte keys of the last event ids (`consumer.engine.event_id_key`)
        self.recent = b""
        self.layout: Compiled | None = None
        self.stage: list[int] = []
        self.entered: list[int] = []
        self.history: list[tuple[tuple[int, int], ...]] = []
        self.since: list[tuple[int | None, ...]] = []
        self.values: list[Any] = []
        #: whether stage, entered, history and since are this state's own
        self.owned = True

    def bind(self, layout: Compiled) -> None:
        """Give a fresh state the shape of ``layout`` (no stage, no counts)."""
        self.layout = layout
        self.owned = True
        count = len(layout.lifecycles)
        self.stage = [-1] * count
        self.entered = [-1] * count
        self.history = [()] * count
        self.since = list(layout.blank_since)
        self.values = list(layout.blank_values)

    def copy(self) -> ContactState:
        """Return an independent copy (values are immutable, lists are not)."""
        other = self.fork()
        other.own_stages()
        other.values = self.values.copy()
        return other

    def fork(self) -> ContactState:
        """Return a copy that shares the lists until the engine replaces them.

        The engine calls `own_stages` before a move and copies ``values``
        before it records anything, so the original never changes.
        """
        other = ContactState.__new__(ContactState)
        other.contact_id = self.contact_id
        other.clock_ms = self.clock_ms
        other.first_ms = self.first_ms
        other.due_ms = self.due_ms
        other.recent = self.recent
        other.layout = self.layout
        other.stage = self.stage
        other.entered = self.entered
        other.history = self.history
        other.since = self.since
        other.values = self.values
        other.owned = False
        return other

    def own_stages(self) -> None:
        """Give the state its own per-lifecycle lists before they change."""
        if not self.owned:
            self.stage = self.stage.copy()
            self.entered = self.entered.copy()
            self.history = self.history.copy()
            self.since = self.since.copy()
            self.owned = True

    @property
    def stages(self) -> dict[str, str | None]:
        """Return the current stage of every lifecycle (None: no stage yet)."""
        if self.layout is None:
            return {}
        return {
            lifecycle.name: (
                lifecycle.stage_names[index] if (index := self.stage[i]) >= 0 else None
            )
            for i, lifecycle in enumerate(self.layout.lifecycles)
        }

    @property
    def history_by_lifecycle(self) -> dict[str, tuple[StageVisit, ...]]:
        """Return the kept stage history of every lifecycle, oldest first."""
        if self.layout is None:
            return {}
        found = {}
        for i, lifecycle in enumerate(self.layout.lifecycles):
            moves = self.history[i]
            visits = []
            for position, (rule_index, at_ms) in enumerate(moves):
                rule = lifecycle.rules[rule_index]
                exited = moves[position + 1][1] if position + 1 < len(moves) else None
                visits.append(
                    StageVisit(
                        lifecycle.stage_names[rule.to_stage],
                        rule.rule_id,
                        at_ms,
                        exited,
                    )
                )
            found[lifecycle.name] = tuple(visits)
        return found

    def _key(self) -> tuple[object, ...]:
        fingerprint = self.layout.fingerprint if self.layout is not None else None
        return (
            self.contact_id,
            self.clock_ms,
            self.first_ms,
            self.due_ms,
            self.recent,
            fingerprint,
            self.stage,
            self.entered,
            self.history,
            self.since,
            self.values,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContactState):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ContactState(contact_id={self.contact_id!r}, clock_ms={self.clock_ms}, "
            f"stages={self.stages!r}, due_ms={self.due_ms}, values={self.values!r})"
        )
