"""Service-level due times. Pure; all arithmetic in aware UTC."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta


def due(start: datetime, priority: str, hours: Mapping[str, float]) -> datetime:
    """When the clock that started at ``start`` runs out for ``priority``."""
    if start.tzinfo is None:
        raise ValueError("SLA arithmetic needs an aware datetime")
    return start + timedelta(hours=hours[priority])
