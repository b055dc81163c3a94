"""The audit report as data: facts, each with how it was checked, tables and plots.

A fact's `status` is what the auditor established at report time, not what a file claims:
- VERIFIED: checked now and true (e.g. the proof verified again with the package's key);
- FAILED: checked now and false;
- UNCHECKED: could not be checked (a service down, a file missing); shown in red, never hidden;
- WARNING: checked, true, but a trust caveat (an INSECURE dev SRS);
- UNPROVEN: metadata shown as it was found (timestamps, row counts in a file), bound by nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

VERIFIED, FAILED, UNCHECKED, WARNING, UNPROVEN = "verified", "failed", "unchecked", "warning", "unproven"
Status = Literal["verified", "failed", "unchecked", "warning", "unproven"]
STATUSES = (VERIFIED, FAILED, UNCHECKED, WARNING, UNPROVEN)


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    status: Status
    how: str  # how it was checked, or why it could not be

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"fact {self.label!r}: status {self.status!r} is not one of {', '.join(STATUSES)}")


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    # per-row status (same length as rows, or empty): colours the row's first cell
    row_status: tuple[Status, ...] = ()


@dataclass(frozen=True)
class Series:
    name: str
    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True)
class Plot:
    title: str
    kind: Literal["histogram", "line"]
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    note: str = ""  # where the numbers come from (checked or not)


@dataclass(frozen=True)
class Section:
    title: str
    facts: tuple[Fact, ...] = ()
    tables: tuple[Table, ...] = ()
    plots: tuple[Plot, ...] = ()


@dataclass(frozen=True)
class AuditReport:
    kind: Literal["proof", "job"]
    subject: str  # the proof hash or the job directory audited
    generated_at: str  # ISO 8601 UTC
    sections: tuple[Section, ...] = field(default_factory=tuple)

    def facts(self) -> list[Fact]:
        return [fact for section in self.sections for fact in section.facts]

    @property
    def verdict(self) -> Status:
        """FAILED if any check failed, UNCHECKED if any could not run, else VERIFIED."""
        statuses = {fact.status for fact in self.facts()}
        for status in (FAILED, UNCHECKED):
            if status in statuses:
                return status
        return VERIFIED

    def counts(self) -> dict[str, int]:
        statuses = [fact.status for fact in self.facts()]
        return {status: statuses.count(status) for status in STATUSES}

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict, "counts": self.counts()}
