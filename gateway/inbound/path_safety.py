"""Refuses request targets that could change the host or climb out of their prefix (SPEC §4).

Checked on the raw target, before aiohttp's router (which normalises ``..`` away) can
route a crafted path somewhere else: only origin-form targets, no empty segment
(``//``), no ``.``/``..`` segment, also when percent-encoded (once or more), no encoded
slash or backslash, no control or non-ASCII bytes, no fragment.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from gateway.errors import BadRequest

_PRINTABLE = re.compile(r"[\x21-\x7e]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
MAX_TARGET = 8192


def _shown(text: str, limit: int = 64) -> str:
    """A refused piece of the target, quoted and cut, with unprintable characters escaped."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    return repr(shown)


def _decoded(segment: str) -> str:
    original = segment
    for _ in range(3):  # double and triple encodings are decoded by some servers
        if _BAD_PERCENT.search(segment):
            raise BadRequest(f"malformed percent-encoding in the path segment {_shown(original)}")
        decoded = unquote(segment)
        if decoded == segment:
            return decoded
        segment = decoded
    return segment


def check_target(target: str) -> None:
    """Raise ``BadRequest`` unless ``target`` is a safe origin-form path and query."""
    if len(target) > MAX_TARGET:
        raise BadRequest(f"the request target is {len(target)} characters long; at most {MAX_TARGET} are allowed")
    if not target.startswith("/") or target.startswith("//"):
        raise BadRequest(f"the request target must be an origin-form path starting with one '/', got {_shown(target)}")
    if "#" in target:
        raise BadRequest("the request target must not carry a fragment ('#')")
    if not _PRINTABLE.fullmatch(target):  # the regex on every request; the culprit only on a refusal
        bad = next(c for c in target if not ("\x21" <= c <= "\x7e"))
        raise BadRequest(f"the request target has a character that is not allowed: {bad!r} (only printable ASCII; percent-encode the rest)")
    path = target.split("?", 1)[0]
    if "//" in path:
        raise BadRequest(f"empty path segment ('//') in {_shown(path)}")
    if "%" not in path and "/." not in path and "\\" not in path:
        return  # nothing to decode and no dot segment: no segment check below can fail
    for segment in path.split("/")[1:]:
        decoded = _decoded(segment)
        if decoded in (".", ".."):
            raise BadRequest(f"the path segment {_shown(segment)} is a dot segment ({decoded!r}): a path cannot climb out of /v1/")
        if "/" in decoded or "\\" in decoded:
            raise BadRequest(f"the path segment {_shown(segment)} encodes a slash or backslash")
        if not _PRINTABLE.fullmatch(decoded):
            raise BadRequest(f"the path segment {_shown(segment)} decodes to a character that is not allowed")
