"""Which event times a worker accepts: nothing far in the future, nothing older than the plant's history.

Why: a part stamped 2099 or 1970 is a clock or encoding fault at the source (a PLC whose battery
died, seconds sent as milliseconds). Stored, it would sit at the edge of every dashboard, fall
outside every retention and compression policy, and poison time-ordered detectors (a chart's
next point decades away). It is rejected in the first decoding pass with a reason that names
the window, and the window is a setting, so a replay of old history can widen it.

>>> from datetime import UTC, datetime, timedelta
>>> now = datetime(2026, 6, 1, tzinfo=UTC)
>>> window = EventTimeWindow()
>>> window.violation(now - timedelta(days=30), now) is None
True
>>> window.violation(now + timedelta(days=2), now).split(';')[0]
"event time 2026-06-03T00:00:00+00:00 is more than 1 day ahead of this worker's clock (2026-06-01T00:00:00+00:00)"
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: Default tolerance for clocks ahead of the worker's (time zones mislabelled by a day included).
DEFAULT_MAX_FUTURE_S = 86_400.0
#: Default oldest accepted event: ten years (a replay of older history raises it).
DEFAULT_MAX_AGE_S = 10 * 365.25 * 86_400.0


def _span(seconds: float) -> str:
    days = seconds / 86_400.0
    if days >= 365:
        return f"{days / 365.25:.0f} years"
    return f"{days:.0f} day" + ("s" if round(days) != 1 else "")


@dataclass(frozen=True)
class EventTimeWindow:
    """Accepted event times: from ``max_age_s`` before the worker's clock to ``max_future_s`` after it."""

    max_future_s: float = DEFAULT_MAX_FUTURE_S
    max_age_s: float = DEFAULT_MAX_AGE_S

    def violation(self, ts: datetime, now: datetime) -> str | None:
        """Why ``ts`` is refused, or ``None`` when it is inside the window."""
        if ts > now + timedelta(seconds=self.max_future_s):
            return (f"event time {ts.isoformat()} is more than {_span(self.max_future_s)} ahead of this worker's "
                    f"clock ({now.isoformat()}); fix the source clock, or raise LINEWATCH_EVENT_TIME_MAX_FUTURE_S")
        if ts < now - timedelta(seconds=self.max_age_s):
            return (f"event time {ts.isoformat()} is more than {_span(self.max_age_s)} older than this worker's "
                    f"clock ({now.isoformat()}); fix the source clock (seconds sent as milliseconds?), or raise "
                    "LINEWATCH_EVENT_TIME_MAX_AGE_S to replay older history")
        return None
