"""What an import did: counts, rejections with their reasons, and (when asked) each record's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    updated: int = 0  # duplicates whose labels were replaced by the import's (update_labels)
    differing_labels: int = 0  # duplicates whose stored labels differ from the import's and were kept
    rejected: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    outcomes: dict[int, dict[str, Any]] | None = None  # by record position, when asked for

    def reject(self, file: str, reason: str, index: int | None = None) -> None:
        self.rejected.append({"file": file, "reason": reason})
        self.note(index, "rejected", reason=reason)

    def note(self, index: int | None, outcome: str, input_id: str | None = None, existing_id: str | None = None,
             reason: str | None = None) -> None:
        """Record what became of record ``index`` (imported, duplicate, rejected); a later note replaces it."""
        if self.outcomes is not None and index is not None:
            self.outcomes[index] = {"index": index, "input_id": input_id, "outcome": outcome,
                                    "existing_id": existing_id, "reason": reason, "updated": False,
                                    "differing_labels": False}

    def flag(self, index: int | None, what: str) -> None:
        """Mark a duplicate's outcome ``updated`` or ``differing_labels``."""
        if self.outcomes is not None and index in self.outcomes:
            self.outcomes[index][what] = True

    @property
    def items(self) -> list[dict[str, Any]] | None:
        """Each record's outcome in input order (None unless asked for)."""
        return None if self.outcomes is None else [self.outcomes[i] for i in sorted(self.outcomes)]

    @property
    def ok(self) -> bool:
        """False when nothing at all was readable (a failed import, as opposed to a partial one)."""
        return self.imported + self.duplicates > 0 or not self.rejected

    def as_dict(self) -> dict[str, Any]:
        rate = self.imported / self.seconds if self.seconds else 0.0
        items = {} if self.outcomes is None else {"items": self.items}
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "updated": self.updated,
            "differing_labels": self.differing_labels,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(rate, 1),
            **items,
        }
