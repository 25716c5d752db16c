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


def _decoded(segment: str) -> str:
    for _ in range(3):  # double and triple encodings are decoded by some servers
        if _BAD_PERCENT.search(segment):
            raise BadRequest("malformed percent-encoding in the request target")
        decoded = unquote(segment)
        if decoded == segment:
            return decoded
        segment = decoded
    return segment


def check_target(target: str) -> None:
    """Raise ``BadRequest`` unless ``target`` is a safe origin-form path and query."""
    if len(target) > MAX_TARGET:
        raise BadRequest("request target too long")
    if not target.startswith("/") or target.startswith("//"):
        raise BadRequest("request target must be an origin-form path")
    if not _PRINTABLE.fullmatch(target) or "#" in target:
        raise BadRequest("request target has characters that are not allowed")
    path = target.split("?", 1)[0]
    if "//" in path:
        raise BadRequest("empty path segment in the request target")
    if "%" not in path and "/." not in path and "\\" not in path:
        return  # nothing to decode and no dot segment: no segment check below can fail
    for segment in path.split("/")[1:]:
        decoded = _decoded(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or not _PRINTABLE.fullmatch(decoded):
            raise BadRequest("path segment is not allowed in the request target")
