"""Text templates for ServiceNow fields: ``{title}`` style placeholders from a fixed set.

Templates come from the rules document (user-editable), so only known placeholders are allowed
and values are substituted as plain text: no attribute access, no format specs.
"""

from __future__ import annotations

import dataclasses
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Placeholders:
    """What a template may use: one field per placeholder (``{title}``, …). This class is the one list:
    templates are checked against its fields, and the values that fill them are built as an instance."""

    title: str
    message: str
    severity: str
    engine: str
    protocol: str
    alert_id: str
    time: str
    sensor: str
    sensor_id: str
    site: str
    zone: str
    source: str
    destination: str
    remediation: str
    information: str
    sensor_url: str
    status: str  # a system notification's online / offline
    resolution: str  # how Defender handled the alert (alert_status messages)
    handled_by: str
    resolution_notes: str
    details: str  # everything above, in reading order, and the asset section below: the description
    # The alert's devices as the asset index knows them when its record is written (empty until then, and when
    # the device is not in the CMDB): the Configuration item's name and class, its Purdue level and criticality,
    # its open CVEs (the top five by score, the rest counted), and the section on every device the alert names.
    ci: str
    ci_class: str
    purdue_level: str
    criticality: str
    cves: str
    assets: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


PLACEHOLDERS = frozenset(f.name for f in dataclasses.fields(Placeholders))
# Known when a new record is written only: a group's key, a closing's notes and a repeat's note never see them.
ASSET_PLACEHOLDERS = frozenset({"ci", "ci_class", "purdue_level", "criticality", "cves", "assets"})
NO_ASSETS = dict.fromkeys(ASSET_PLACEHOLDERS, "")
ELLIPSIS = "…"


def placeholders(template: str) -> list[str]:
    """The placeholder names a template uses; raises ValueError on malformed braces or a format spec."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} must be a plain name, without format spec or conversion")
        names.append(name)
    return names


def check(template: str, *, assets: bool = True) -> str | None:
    """None when the template is valid, else what is wrong with it. ``assets``: whether the template is rendered
    when a new record is written, where the asset placeholders have their values."""
    try:
        used = set(placeholders(template))
    except ValueError as exc:
        return str(exc)
    if unknown := sorted(used - PLACEHOLDERS):
        names = ", ".join("{" + u + "}" for u in unknown)
        return f"unknown placeholder(s) {names}; known: {', '.join(sorted(PLACEHOLDERS))}"
    if not assets and (late := sorted(used & ASSET_PLACEHOLDERS)):
        names = ", ".join("{" + u + "}" for u in late)
        return f"{names} known only when a new record is written, not here"
    return None


def render(template: str, values: Mapping[str, str]) -> str:
    return "".join(
        literal + (values.get(name, "") if name is not None else "")
        for literal, name, _, _ in string.Formatter().parse(template)
    )


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending with '…' when cut, never cutting inside a character.

    Python strings are code points, so surrogate pairs cannot split; combining marks, joiners and
    variation selectors belong to the character before them, so the cut backs off over them.
    """
    text = " ".join(text.split()) if "\n" in text else text
    if len(text) <= limit:
        return text
    cut = limit - len(ELLIPSIS)
    while cut > 0 and _attaches(text[cut]):
        cut -= 1
    if cut > 0 and text[cut - 1] == "\u200d":  # never end on a zero-width joiner
        cut -= 1
    return text[:cut].rstrip() + ELLIPSIS


def _attaches(char: str) -> bool:
    return bool(unicodedata.combining(char)) or char in "\u200d\ufe0e\ufe0f" or "\U0001f3fb" <= char <= "\U0001f3ff"
