"""What every read model that takes OICP pushes reports back (DIGEST §9.1, ActionType semantics).

``insert`` and ``update`` are all-or-nothing: if one record conflicts (already exists / does not
exist) nothing is applied and the conflicting keys are reported, for StatusCode 009 with details in
AdditionalInfo. ``fullLoad`` makes the given records the complete set of its scope; ``delete``
removes the given records and ignores unknown ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_KEYS_IN_INFO = 10


@dataclass(frozen=True)
class ApplyResult:
    conflicts: list[str] = field(default_factory=list)
    """Record keys that made an insert (already there) or update (not there) impossible."""
    changed: list[str] = field(default_factory=list)
    """Record keys inserted or whose content changed."""
    deleted: list[str] = field(default_factory=list)
    """Record keys removed (by delete, or by a fullLoad that left them out)."""

    @property
    def ok(self) -> bool:
        return not self.conflicts

    def conflict_info(self, action: str) -> str:
        """The AdditionalInfo of the 009 answer: what conflicted and why nothing was applied."""
        reason = "already exist" if action == "insert" else "do not exist"
        shown = ", ".join(self.conflicts[:MAX_KEYS_IN_INFO])
        more = len(self.conflicts) - MAX_KEYS_IN_INFO
        suffix = f" and {more} more" if more > 0 else ""
        return f"{action} aborted, nothing was applied: records {shown}{suffix} {reason}"
