"""Prompt policy: what a client may add to the model prompt, and the template that surrounds it.

The model prompt is never the client's text: it is a fixed template per style with the client's
optional `prompt` (a scene description: "on a beach at sunset") inserted, and the negative prompt
always excludes nudity, minors and distortions whatever the client wrote. The addition itself must
pass `check_prompt`: at most 300 characters, printable, and none of the terms in
`disallowed_terms.txt` — matched as whole words after folding case, accents and Unicode look-alikes
(NFKC), undoing digit/symbol swaps (n4ked) and spelled-out letters (n.u.d.e), and as glued-in
substrings for longer terms.

A word list is a floor, not a classifier: it stops the obvious and the lazy. The output side has its
own checks (the content filter on the inputs, labelling on the outputs).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

MAX_PROMPT_CHARS = 300
_TERMS_FILE = Path(__file__).with_name("disallowed_terms.txt")
_GLUED_MIN = 6  # terms this long are also found inside other words ("nakedness" has "naked": 5, not)
_SWAPS = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)

STYLE_PROMPTS: dict[str, str] = {
    "peck": "a short, light kiss on the lips",
    "romantic": "a slow, tender romantic kiss, heads tilted",
    "french": "a long, passionate kiss, heads tilted",
    "cheek": "a gentle kiss on the cheek",
}
TEMPLATE = (
    "Two fully clothed adults, the two people of the reference photos, {action}. {scene}"
    "Photorealistic, natural light, faces and identities as in the reference photos."
)
NEGATIVE_PROMPT = (
    "nudity, nude, naked, topless, nsfw, sexual content, explicit, child, minor, teenager, "
    "deformed face, merged faces, extra mouths, extra limbs, distorted identity, text, watermark removal"
)


@dataclass(frozen=True)
class ModelPrompt:
    prompt: str
    negative_prompt: str


def fold(text: str) -> str:
    """Lower-case letters and single spaces: NFKC, casefold, accents dropped, digit/symbol swaps undone."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_SWAPS)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(re.findall(r"[a-z]+", text))


def _join_spelled_out(folded: str) -> str:
    """Runs of three or more single letters become one word: "n u d e" (from n.u.d.e) -> "nude"."""
    return re.sub(r"\b[a-z](?: [a-z]\b){2,}", lambda m: m.group(0).replace(" ", ""), folded)


@functools.lru_cache(maxsize=1)
def disallowed_terms() -> tuple[str, ...]:
    lines = _TERMS_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(sorted({fold(line) for line in lines if line.strip() and not line.lstrip().startswith("#")}))


def disallowed_in(text: str) -> list[str]:
    """The disallowed terms found in `text` (empty: allowed)."""
    folded = f" {_join_spelled_out(fold(text))} "
    glued = folded.replace(" ", "")
    return [
        term
        for term in disallowed_terms()
        if f" {term} " in folded
        or (len(term.replace(" ", "")) >= _GLUED_MIN and term.replace(" ", "") in glued)
    ]


def check_prompt(text: str) -> str:
    """The addition, stripped, if it passes the policy; ValueError saying why otherwise."""
    text = text.strip()
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"`prompt` may have at most {MAX_PROMPT_CHARS} characters but has {len(text)}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in text):
        raise ValueError("`prompt` may contain only printable characters")
    found = disallowed_in(text)
    if found:
        raise ValueError(f"`prompt` contains terms this service does not allow: {', '.join(found)}")
    return text


def intensity_phrase(intensity: float) -> str:
    """Words for the request's intensity (0..1): the style's action, held back or drawn out."""
    if intensity < 1 / 3:
        return "Restrained and brief. "
    return "Lingering and intense, still tender. " if intensity > 2 / 3 else ""


def build_prompt(style: str, addition: str = "", intensity: float | None = None) -> ModelPrompt:
    """The model prompt for a style, an (already checked) addition and optionally the intensity.

    The negative prompt is fixed.
    """
    scene = f"Scene: {check_prompt(addition)}. " if addition.strip() else ""
    if intensity is not None:
        scene = intensity_phrase(intensity) + scene
    return ModelPrompt(TEMPLATE.format(action=STYLE_PROMPTS[style], scene=scene), NEGATIVE_PROMPT)
