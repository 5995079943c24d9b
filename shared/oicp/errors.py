"""Human-readable text of a pydantic ValidationError, for StatusCode.AdditionalInfo of error answers."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["describe_validation_error", "oicp_path"]

MAX_ERRORS = 3
MAX_LENGTH = 1000  # StatusCode.AdditionalInfo field length


def oicp_path(loc: tuple[int | str, ...]) -> str:
    """``("OperatorEvseStatus", "EvseStatusRecord", 0, "EvseID")`` ->
    ``OperatorEvseStatus.EvseStatusRecord[0].EvseID`` (pydantic locs carry the OICP aliases)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(body)"


def describe_validation_error(exc: ValidationError) -> str:
    """Short message naming each offending field by its OICP path, e.g.
    ``OperatorEvseStatus.EvseStatusRecord[0].EvseID: String should match pattern '...'``.
    At most the first 3 errors, always below 1000 characters."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = []
    for err in errors[:MAX_ERRORS]:
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "Field required"
        parts.append(f"{oicp_path(tuple(err['loc']))}: {msg}")
    text = "; ".join(parts)
    if len(errors) > MAX_ERRORS:
        text += f" (+{len(errors) - MAX_ERRORS} more)"
    if len(text) >= MAX_LENGTH:
        text = text[: MAX_LENGTH - 2] + "…"
    return text
