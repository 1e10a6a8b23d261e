"""The rule for hub user names: one spelling per person, safe in every place a name goes.

A name becomes a Unix account, a directory, a Kubernetes namespace and part of URLs, and
attendees type it themselves. So it is NFKC-normalised and lowercased first (a full-width
"ＡＬＩＣＥ" is "alice"), and what is left must be ASCII letters, digits, ``.``, ``_`` and
``-``. Everything else, lookalikes from other scripts included ("аlice" with a Cyrillic
"а"), is refused with the rule named, never silently rewritten into someone else's name.
"""

from __future__ import annotations

import re
import unicodedata

NAME_MAX_LENGTH = 32
NAME_RULE = (
    f"1 to {NAME_MAX_LENGTH} characters from a-z, 0-9, '.', '_' and '-', "
    "starting with a letter or a digit"
)
_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


class InvalidName(ValueError):
    """A user name breaks the rule; the message names the rule and is safe to show."""


def normalize_name(raw: str) -> str:
    """The one spelling of ``raw``: NFKC, then lowercase (nothing else is changed)."""
    return unicodedata.normalize("NFKC", raw).lower()


def check_name(raw: str) -> str:
    """The normalised name, or :class:`InvalidName` saying what is wrong with it."""
    name = normalize_name(raw)
    if not name:
        raise InvalidName(f"username: must not be empty; use {NAME_RULE}")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidName(f"username: {len(name)} characters is too long; use {NAME_RULE}")
    if not _NAME_PATTERN.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[a-z0-9._-]", c)})
        # Code points, not glyphs: a lookalike must be told apart from what it imitates.
        shown = ", ".join(
            repr(c) if c.isascii() and c.isprintable() else f"U+{ord(c):04X}" for c in bad
        )
        why = f"it contains {shown}" if bad else "it must start with a letter or a digit"
        raise InvalidName(f"username: {why}; use {NAME_RULE}")
    return name
