"""YAML nodes with their lines: the reading helper of the plan loader.

`Document` wraps the node tree that ``yaml.compose`` builds and turns every
malformed value into `consumer.errors.PlanError` naming the file and line.
"""

from __future__ import annotations

import contextlib
import math
from typing import NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consumer.conditions import is_number, parse_duration_ms
from consumer.errors import PlanError


class Document:
    """A YAML node tree and the file it came from; raises located errors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: Node, message: str) -> NoReturn:
        """Raise `PlanError` naming the line of ``node``."""
        raise PlanError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(
        self,
        node: Node,
        what: str,
        allowed: set[str] | None = None,
        required: tuple[str, ...] = (),
    ) -> dict[str, Node]:
        """Return the keys of a mapping node; reject unknown and missing keys."""
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a mapping")
        items: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, f"a key of {what}")
            if not isinstance(key, str):
                self.fail(key_node, f"keys of {what} must be text, got {key!r}")
            if key in items:
                self.fail(key_node, f"duplicate key {key!r} in {what}")
            if allowed is not None and key not in allowed:
                self.fail(
                    key_node,
                    f"unknown key {key!r} in {what} "
                    f"(allowed: {', '.join(sorted(allowed))})",
                )
            items[key] = value_node
        for key in required:
            if key not in items:
                self.fail(node, f"{what} needs the key {key!r}")
        return items

    def sequence(self, node: Node, what: str) -> list[Node]:
        """Return the items of a sequence node."""
        if not isinstance(node, SequenceNode):
            self.fail(node, f"{what} must be a list")
        return list(node.value)

    def scalar(self, node: Node, what: str) -> object:
        """Return the value of a scalar node (text, number, boolean or null)."""
        if not isinstance(node, ScalarNode):
            self.fail(node, f"{what} must be a single value")
        value = self._constructor.construct_object(node)
        if value is not None and not isinstance(value, str | int | float | bool):
            self.fail(node, f"{what}: quote {node.value!r} to make it text")
        return value

    def text(self, node: Node, what: str) -> str:
        """Return a non-empty text scalar."""
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value:
            self.fail(node, f"{what} must be non-empty text, got {value!r}")
        return value

    def boolean(self, node: Node, what: str) -> bool:
        """Return a boolean scalar."""
        value = self.scalar(node, what)
        if not isinstance(value, bool):
            self.fail(node, f"{what} must be true or false, got {value!r}")
        return value

    def number(self, node: Node, what: str) -> int | float:
        """Return a numeric scalar."""
        value = self.scalar(node, what)
        if isinstance(value, str) and getattr(node, "style", None) is None:
            # YAML 1.1 reads 1e6 (no dot) as text; a plain 1e6 means a number.
            with contextlib.suppress(ValueError):
                value = float(value)
        if not is_number(value) or not math.isfinite(value):  # type: ignore[arg-type]
            self.fail(node, f"{what} must be a number, got {value!r}")
        assert isinstance(value, int | float)
        return value

    def duration_ms(self, node: Node, what: str) -> int:
        """Return a duration such as ``14d`` in milliseconds."""
        value = self.scalar(node, what)
        try:
            return parse_duration_ms(str(value))
        except ValueError as exc:
            self.fail(node, f"{what}: {exc}")

    def seconds(self, node: Node, what: str) -> float:
        """Return a duration given as ``5s`` style text or a number of seconds."""
        value = self.scalar(node, what)
        if is_number(value):
            assert isinstance(value, int | float)
            if value < 0:
                self.fail(node, f"{what} must not be negative")
            return float(value)
        return self.duration_ms(node, what) / 1000
