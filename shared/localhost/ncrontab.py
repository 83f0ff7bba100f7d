"""Timer trigger schedules: six-field NCRONTAB expressions and TimeSpan intervals.

``{second} {minute} {hour} {day} {month} {day-of-week}``, each field ``*``, a number, a
range ``a-b``, a step ``*/n`` / ``a-b/n`` / ``a/n``, or a comma-separated list of those;
months and days of the week may be named (``Jan``, ``Mon``); Sunday is 0 (or 7). As in
NCrontab, a time must match the day-of-month *and* the day-of-week field. A schedule of the
form ``hh:mm:ss`` is an interval instead (allowed on App Service plans). Times are UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from shared.localhost.hostjson import parse_timespan

__all__ = ["CronSchedule", "IntervalSchedule", "Schedule", "parse_schedule"]

_MONTHS = {
    name: n
    for n, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        start=1,
    )
}
_DAYS = {name: n for n, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"^(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(\d+))?$")
_SEARCH_YEARS = 5


class Schedule(Protocol):
    """When a timer fires."""

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment``."""


def _value(text: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(text.lower())
    if value is None:
        if not text.isdigit():
            raise ValueError(f"{field} field: {text!r} is not a number or a name")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{field} field: {value} is outside {low}..{high}")
    return value


def _field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(f"{field} field: cannot read {item!r}")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"{field} field: step {step} must be at least 1")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, last = span.split("-", 1)
            start = _value(first, field, low, high, names)
            end = _value(last, field, low, high, names)
        else:
            start = _value(span, field, low, high, names)
            end = high if step_text else start
        if start > end:
            raise ValueError(f"{field} field: range {span} runs backwards")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed six-field NCRONTAB expression."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse; ``ValueError`` names the field and what is wrong."""
        parts = expression.split()
        if len(parts) != 6:
            raise ValueError(
                f"schedule {expression!r} has {len(parts)} fields; NCRONTAB needs 6: "
                "{second} {minute} {hour} {day} {month} {day-of-week}"
            )
        try:
            sets = [
                _field(part, name, low, high, names)
                for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
            ]
        except ValueError as exc:
            raise ValueError(f"schedule {expression!r}: {exc}") from exc
        weekdays = frozenset(day % 7 for day in sets[5])
        return cls(expression, sets[0], sets[1], sets[2], sets[3], sets[4], weekdays)

    def next_after(self, moment: datetime) -> datetime:
        """The first matching second strictly after ``moment`` (same tzinfo)."""
        t = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = moment.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif t.day not in self.days or (t.weekday() + 1) % 7 not in self.weekdays:
                t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0, second=0)
            elif t.minute not in self.minutes:
                t = (t + timedelta(minutes=1)).replace(second=0)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ValueError(f"schedule {self.expression!r} never fires")


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """A fixed interval (a TimeSpan schedule such as ``00:05:00``)."""

    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        """``moment`` plus the interval."""
        return moment + self.interval


def parse_schedule(schedule: str) -> Schedule:
    """A ``CronSchedule`` or, for ``hh:mm:ss``, an ``IntervalSchedule``."""
    text = schedule.strip()
    if " " not in text and ":" in text:
        seconds = parse_timespan(text)
        if seconds <= 0:
            raise ValueError(f"schedule {schedule!r}: an interval must be positive")
        return IntervalSchedule(timedelta(seconds=seconds))
    return CronSchedule.parse(text)
