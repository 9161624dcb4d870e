"""IEMOCAP from its official release layout.

    ROOT/Session1/dialog/EmoEvaluation/Ses01F_impro01.txt
    ROOT/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav

An evaluation file holds one summary line per utterance,

    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]

followed by the individual annotators' lines, which do not start with `[` and are ignored.
The bracketed triple is the utterance's mean dimensional rating `[V, A, D]` (valence, activation
i.e. arousal, dominance; scale 1-5): it becomes `Utterance.valence`, `.arousal`, `.dominance`.
The paper's 4-class set keeps ang/hap/exc/neu/sad and merges excited into happy: 5,531 utterances.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from emoknn.corpora.utterance import Utterance, as_path, check_unique_ids, require_files
from emoknn.errors import CorpusError

# Native IEMOCAP codes → the paper's 4 classes. Codes absent here (fru, sur, fea, dis, oth, xxx)
# are left out.
IEMOCAP_FOUR_CLASS_MAP: dict[str, str] = {
    "ang": "angry",
    "hap": "happy",
    "exc": "happy",
    "neu": "neutral",
    "sad": "sad",
}

_SUMMARY_LINE = re.compile(
    r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s+(?P<id>Ses\d\d[FM]_\S+)\s+(?P<code>\w+)\s+\["
    r"(?:\s*(?P<v>[\d.]+)\s*,\s*(?P<a>[\d.]+)\s*,\s*(?P<d>[\d.]+)\s*\])?"
)
ATTRIBUTE_SCALE = (1.0, 5.0)  # IEMOCAP's dimensional ratings: 1-5
_SESSION_DIR = re.compile(r"^Session(\d+)$")


def load_iemocap(
    root: str | os.PathLike,
    label_map: dict[str, str] | None = None,
    skip_missing: bool = False,
) -> list[Utterance]:
    """Read the IEMOCAP release at `root` (the folder holding Session1 ... Session5).

    Args:
        root: the `IEMOCAP_full_release` folder.
        label_map: native code → class name; defaults to the paper's 4 classes.
        skip_missing: leave out utterances whose wav is missing instead of raising.

    Returns:
        Utterances sorted by id. The speaker is the session plus the gender letter of the
        utterance's own suffix: `Ses01F_impro01_M003` is speaker `Ses01M` (the letter in the dialog
        name is who wore the motion-capture markers, not who spoke).

    Raises:
        CorpusError: no Session folders or evaluation files, or wavs missing.
    """
    root = as_path(root, "IEMOCAP root")
    label_map = IEMOCAP_FOUR_CLASS_MAP if label_map is None else label_map
    if not root.is_dir():
        raise CorpusError(f"{root}: IEMOCAP root is not a directory")
    sessions = sorted(p for p in root.iterdir() if p.is_dir() and _SESSION_DIR.match(p.name))
    if not sessions:
        raise CorpusError(
            f"{root}: no Session1..Session5 folders; expected the IEMOCAP_full_release layout "
            "(SessionN/dialog/EmoEvaluation/*.txt)"
        )
    utterances: list[Utterance] = []
    for session_dir in sessions:
        evaluation_dir = session_dir / "dialog" / "EmoEvaluation"
        if not evaluation_dir.is_dir():
            raise CorpusError(f"{evaluation_dir}: missing; expected IEMOCAP evaluation files here")
        for evaluation_file in sorted(evaluation_dir.glob("*.txt")):
            # macOS leaves `._Ses01F_impro01.txt` resource forks beside real files.
            if evaluation_file.name.startswith(".") or not evaluation_file.is_file():
                continue
            utterances.extend(_read_evaluation_file(evaluation_file, session_dir, label_map))
    if not utterances:
        raise CorpusError(f"{root}: no labelled utterances found in any EmoEvaluation/*.txt")
    utterances.sort(key=lambda u: u.id)
    check_unique_ids(utterances, str(root))
    return require_files(utterances, f"IEMOCAP at {root}", skip_missing)


def _read_evaluation_file(
    evaluation_file: Path, session_dir: Path, label_map: dict[str, str]
) -> list[Utterance]:
    try:
        text = evaluation_file.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise CorpusError(f"{evaluation_file}: cannot read ({error})") from error
    utterances = []
    for line in text.splitlines():
        match = _SUMMARY_LINE.match(line)
        if match is None:
            continue
        utterance_id, code = match["id"], match["code"]
        label = label_map.get(code)
        if label is None:
            continue
        dialog = utterance_id.rsplit("_", 1)[0]  # Ses01F_impro01_M003 -> Ses01F_impro01
        gender = utterance_id.rsplit("_", 1)[1][0]  # M003 -> M
        if gender not in "FM":
            raise CorpusError(
                f"{evaluation_file}: utterance id {utterance_id!r} does not end in _F### or _M###"
            )
        session = utterance_id[:5]  # Ses01
        path = session_dir / "sentences" / "wav" / dialog / f"{utterance_id}.wav"
        valence, arousal, dominance = (
            None if match[key] is None else float(match[key]) for key in ("v", "a", "d")
        )
        utterances.append(
            Utterance(utterance_id, path, label, session + gender, session,
                      arousal=arousal, valence=valence, dominance=dominance)
        )  # fmt: skip
    return utterances
