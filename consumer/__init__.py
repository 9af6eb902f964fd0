"""crisp-lifecycle: Kafka events to customer lifecycle stages in Crisp."""

from consumer.events import Event

__all__ = ["Event"]
__version__ = "0.1.0"
