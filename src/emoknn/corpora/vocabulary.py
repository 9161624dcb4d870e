"""One vocabulary of emotion class names, so that classes of different corpora and models meet.

Every corpus loader already names its classes in the common English words (`angry`, `disgust`,
`fearful`, `happy`, `neutral`, `sad`, `surprised`, `calm`, `bored`, …): EmoDB's Angst and
RAVDESS's 06 are both `fearful`. Models are another matter: an imported Hugging Face classifier
may say `fear`, `ang`, `Anger` or `joy`. `canonical_label` turns any of those spellings into the
common word, and `shared_classes` pairs two lists of names by it, so "RAVDESS fearful" meets
"EmoDB fearful" and a model's "fear".

Only spellings of one emotion are merged (`anger`, `ang`, `angry`); emotions that a corpus keeps
apart never are (IEMOCAP's `excited` is not `happy` here: merging them is a choice a label map
makes, e.g. `--label-map four` or a JSON file).
"""

from __future__ import annotations

from collections.abc import Iterable

# spelling (lower case) → the common word every corpus loader uses
SYNONYMS: dict[str, str] = {
    "anger": "angry", "ang": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "disg": "disgust",
    "fear": "fearful", "fearful": "fearful", "fea": "fearful", "afraid": "fearful",
    "scared": "fearful",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy", "joyful": "happy",
    "neutral": "neutral", "neu": "neutral", "neutrality": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprised": "surprised", "surprise": "surprised", "sur": "surprised", "ps": "surprised",
    "calm": "calm", "calmness": "calm",
    "bored": "bored", "boredom": "bored",
    "contempt": "contempt",
}  # fmt: skip


def canonical_label(name: str) -> str:
    """The common word for a class name: `Fear` → `fearful`, `ang` → `angry`; a name with no
    known synonym is returned lower-cased and stripped (so `Excited` meets `excited`)."""
    key = name.strip().lower()
    return SYNONYMS.get(key, key)


def shared_classes(first: Iterable[str], second: Iterable[str]) -> dict[str, str]:
    """{name in `first`: name in `second`} for each class both name, paired by `canonical_label`
    (an exact name wins when several names of `second` share a canonical word)."""
    second = list(second)
    by_word: dict[str, list[str]] = {}
    for name in second:
        by_word.setdefault(canonical_label(name), []).append(name)
    pairs = {}
    for name in first:
        candidates = by_word.get(canonical_label(name), [])
        if name in candidates:
            pairs[name] = name
        elif candidates:
            pairs[name] = sorted(candidates)[0]
    return pairs
