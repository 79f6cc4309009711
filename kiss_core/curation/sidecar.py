"""The sidecar `<name>.json`: licence, one consent reference per person, origin. Checked before decoding.

{"licence": "CC-BY-4.0", "consent_refs": ["consent/2026/0001", "consent/2026/0002"],
 "origin": "https://example.org/clip/17"}       (or "source_id" instead of "origin")
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kiss_core.curation.config import CurateConfig
from kiss_core.curation.reasons import Reason, Rejected

MAX_SIDECAR_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sidecar:
    licence: str
    consent_refs: tuple[str, ...]
    origin: str


def sidecar_name(clip_name: str) -> str:
    """`clip.mp4` -> `clip.json` (the extension replaced)."""
    stem, dot, _ = clip_name.rpartition(".")
    return f"{stem if dot else clip_name}.json"


def parse_sidecar(data: bytes | None) -> tuple[dict[str, object], Sidecar | None]:
    """The raw fields (for the manifest, even when rejected) and the typed sidecar, or Rejected."""
    if data is None:
        raise Rejected(Reason.NO_SIDECAR)
    if len(data) > MAX_SIDECAR_BYTES:
        raise Rejected(Reason.BAD_SIDECAR, detail=f"{len(data)} bytes (at most {MAX_SIDECAR_BYTES})")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(Reason.BAD_SIDECAR, detail=str(exc)[:200]) from None
    if not isinstance(raw, dict):
        raise Rejected(Reason.BAD_SIDECAR, detail=f"a JSON {type(raw).__name__}, not an object")
    licence = raw.get("licence", raw.get("license"))
    refs = raw.get("consent_refs", [])
    origin = raw.get("origin") or raw.get("source_id") or ""
    if not (licence is None or isinstance(licence, str)) or not isinstance(origin, str):
        raise Rejected(Reason.BAD_SIDECAR, detail="`licence` and `origin` have to be strings")
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise Rejected(Reason.BAD_SIDECAR, detail="`consent_refs` has to be a list of strings")
    return raw, Sidecar(licence=licence or "", consent_refs=tuple(refs), origin=origin)


def check_sidecar(sidecar: Sidecar, config: CurateConfig) -> None:
    """Licence on the allow-list, a consent reference per person, an origin: all reasons at once."""
    reasons = []
    if sidecar.licence not in config.licences:
        reasons.append(Reason.LICENCE_NOT_ALLOWED)
    if sum(1 for r in sidecar.consent_refs if r.strip()) < config.min_consent_refs:
        reasons.append(Reason.CONSENT_MISSING)
    if not sidecar.origin.strip():
        reasons.append(Reason.ORIGIN_MISSING)
    if reasons:
        raise Rejected(*reasons)
