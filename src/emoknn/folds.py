"""Speaker-independent cross-validation folds.

Leave-one-speaker-out (the paper's protocol on IEMOCAP, 10 folds): each speaker is the test
speaker once; the validation speaker is the other speaker of the same session (so validation never
shares a speaker with training); every remaining speaker trains.

Rule for speakers without a session partner (corpora with no sessions, such as RAVDESS, CREMA-D
and EmoDB, or a speaker alone in its session): the validation speaker is the next speaker in
sorted order, wrapping around. With sessions of more than two speakers, it is the next speaker of
the same session in sorted order.

Leave-one-session-out (`scheme="session"`): each session is the test set once, the next session
(sorted, wrapping) validates, the rest train; `test_speaker` and `val_speaker` then hold the
session names.

Official (`scheme="official"`): the corpus's own train / validation / test sets, read from
`Utterance.split` — MSP-Podcast Train / Development / Test1 / Test2, MELD train / dev / test, ESD
train / evaluation / test. One fold per test set (MSP-Podcast gives two: test1 and test2), each
training on `train` and validating on the development set; `test_speaker` and `val_speaker` hold
the split names. These sets are the corpus's choice, so they may share speakers: that is reported
(`Fold.speaker_independent`), not refused.

EmoBox's RAVDESS folds (`scheme="emobox"`): the six folds of 4 test actors each that EmoBox (Ma et
al. 2024) ships for RAVDESS — {01,11,20,21} {04,10,12,14} {08,09,19,23} {03,05,07,24}
{02,15,16,18} {06,13,17,22} — so a RAVDESS row can sit beside its published figures. EmoBox trains
on the 20 other actors and keeps no validation set; here every fold needs one (the kNN's k, α, T,
the probe's layer and C, the baseline's C are chosen on it), so the next fold's 4 actors (wrapping)
validate and 16 train, as leave-one-session-out does with sessions. The baseline, the probe and
the kNN datastore then refit on / hold training + validation: the same 20 actors EmoBox trains on.

Cross-speaker (`scheme="cross-speaker"`), for corpora of too few speakers for the above (TESS has
2): each speaker is the test speaker once, never seen in training; the other speakers' clips
train, except every 5th of them (in sorted id order: 20 %), which validate. Test results stay
speaker-independent; validation shares the training speakers, so the choices made on it (k, α,
T, the probe's layer and C) are tuned on seen voices — reported as such (`describe_protocol`).

Disjointness of train, validation and test speakers is checked for every speaker and session fold,
not assumed; for official folds it is measured and reported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from emoknn.corpora.utterance import Utterance
from emoknn.errors import FoldError

SCHEMES = ("speaker", "session", "official", "emobox", "cross-speaker")
CROSS_SPEAKER_VAL_EVERY = 5  # cross-speaker: every 5th clip of the training speakers validates
# EmoBox's RAVDESS folds (its data/ravdess fold files): the test actors of each of the 6 folds.
EMOBOX_RAVDESS_TEST_ACTORS = (
    ("01", "11", "20", "21"), ("04", "10", "12", "14"), ("08", "09", "19", "23"),
    ("03", "05", "07", "24"), ("02", "15", "16", "18"), ("06", "13", "17", "22"),
)  # fmt: skip
# Official split names (lower-cased) that play the validation role; `train` trains and every name
# starting with `test` is a test set of its own.
VALIDATION_SPLITS = ("development", "dev", "validation", "evaluation", "valid", "val")


@dataclass(frozen=True)
class Fold:
    """One train/validation/test split. `index` counts from 0 in sorted test-speaker order."""

    index: int
    test_speaker: str
    val_speaker: str
    train: list[Utterance]
    val: list[Utterance]
    test: list[Utterance]
    scheme: str = "speaker"

    @property
    def name(self) -> str:
        return f"fold{self.index:02d}-{self.test_speaker}"

    @property
    def speaker_independent(self) -> bool:
        """True when train, validation and test share no speaker."""
        train, val = {u.speaker for u in self.train}, {u.speaker for u in self.val}
        test = {u.speaker for u in self.test}
        return not (train & val or train & test or val & test)


def speaker_folds(utterances: Sequence[Utterance], scheme: str = "speaker") -> list[Fold]:
    """Build speaker-independent folds (see the module docstring for the rules).

    Raises:
        FoldError: fewer than 3 speakers (or sessions), missing sessions for `scheme="session"`,
            an unknown scheme, or a fold whose splits share a speaker.
    """
    if scheme not in SCHEMES:
        raise FoldError(f"unknown fold scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if isinstance(utterances, (str, bytes, os.PathLike)):
        raise FoldError(
            f"expected a list of Utterance, got the path {utterances!r}; load the corpus first "
            "(emoknn.corpora.load_corpus)"
        )
    utterances = list(utterances)
    stranger = next((u for u in utterances if not isinstance(u, Utterance)), None)
    if stranger is not None:
        raise FoldError(
            f"expected Utterance items (from the emoknn.corpora loaders), got "
            f"{type(stranger).__name__}: {stranger!r:.80}"
        )
    if scheme == "session":
        return _session_folds(utterances)
    if scheme == "official":
        return _official_folds(utterances)
    if scheme == "emobox":
        return _emobox_folds(utterances)
    if scheme == "cross-speaker":
        return _cross_speaker_folds(utterances)

    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 3:
        raise FoldError(
            f"speaker-independent folds need at least 3 speakers (test, validation, train); "
            f"found {len(speakers)}: {speakers} (--scheme cross-speaker tests each speaker on "
            "folds validated on the training speakers' clips)"
        )
    session_of = _session_of_speakers(utterances)
    return [
        _split(index, test_speaker, _validation_speaker(test_speaker, speakers, session_of),
               utterances, lambda u: u.speaker)
        for index, test_speaker in enumerate(speakers)
    ]  # fmt: skip


def _split(index: int, test_group: str, val_group: str, utterances: list[Utterance],
           group_of: Callable[[Utterance], str | None],
           scheme: str = "speaker") -> Fold:  # fmt: skip
    """The fold testing on `test_group` and validating on `val_group` (speakers or sessions)."""
    fold = Fold(
        index=index,
        test_speaker=test_group,
        val_speaker=val_group,
        train=[u for u in utterances if group_of(u) not in (test_group, val_group)],
        val=[u for u in utterances if group_of(u) == val_group],
        test=[u for u in utterances if group_of(u) == test_group],
        scheme=scheme,
    )
    check_fold(fold)
    return fold


def _session_of_speakers(utterances: Sequence[Utterance]) -> dict[str, str | None]:
    session_of: dict[str, str | None] = {}
    for u in utterances:
        if session_of.setdefault(u.speaker, u.session) != u.session:
            raise FoldError(
                f"speaker {u.speaker!r} appears in sessions {session_of[u.speaker]!r} and "
                f"{u.session!r}; a speaker must belong to one session"
            )
    return session_of


def _validation_speaker(
    test_speaker: str, speakers: list[str], session_of: dict[str, str | None]
) -> str:
    session = session_of[test_speaker]
    partners = sorted(s for s in speakers if session is not None and session_of[s] == session)
    candidates = partners if len(partners) > 1 else speakers
    return candidates[(candidates.index(test_speaker) + 1) % len(candidates)]


def _session_folds(utterances: list[Utterance]) -> list[Fold]:
    without = [u.id for u in utterances if u.session is None]
    if without:
        raise FoldError(
            f"leave-one-session-out needs a session on every utterance; {len(without)} have none, "
            f"e.g. {without[:3]}"
        )
    sessions = sorted({u.session for u in utterances if u.session is not None})
    if len(sessions) < 3:
        raise FoldError(f"leave-one-session-out needs at least 3 sessions; found {sessions}")
    _session_of_speakers(utterances)  # a speaker spanning sessions would leak across splits
    return [
        _split(index, test_session, sessions[(index + 1) % len(sessions)], utterances,
               lambda u: u.session, "session")
        for index, test_session in enumerate(sessions)
    ]  # fmt: skip


def _official_folds(utterances: list[Utterance]) -> list[Fold]:
    without = [u.id for u in utterances if u.split is None]
    if without:
        raise FoldError(
            f"the official protocol needs the corpus's own split on every utterance; "
            f"{len(without)} of {len(utterances)} have none (e.g. {without[:3]}); this corpus "
            "has no official split: use --scheme speaker or session"
        )
    splits = sorted({u.split for u in utterances if u.split is not None})
    validation = [s for s in VALIDATION_SPLITS if s in splits]
    tests = [s for s in splits if s.startswith("test")]
    unknown = [s for s in splits if s != "train" and s not in validation and s not in tests]
    if "train" not in splits or len(validation) != 1 or not tests or unknown:
        raise FoldError(
            f"official splits found: {', '.join(splits)}; expected train, one validation set "
            f"({' or '.join(VALIDATION_SPLITS)}) and test set(s) (test, test1, ...)"
        )
    val_split = validation[0]
    folds = []
    for index, test_split in enumerate(tests):
        fold = Fold(
            index=index,
            test_speaker=test_split,
            val_speaker=val_split,
            train=[u for u in utterances if u.split == "train"],
            val=[u for u in utterances if u.split == val_split],
            test=[u for u in utterances if u.split == test_split],
            scheme="official",
        )
        check_fold(fold)
        folds.append(fold)
    return folds


def _emobox_folds(utterances: list[Utterance]) -> list[Fold]:
    """EmoBox's six RAVDESS folds; the next fold's actors validate (module docstring)."""
    groups = ["actors" + "-".join(actors) for actors in EMOBOX_RAVDESS_TEST_ACTORS]
    group_of_actor = {f"ravdess{actor}": group
                      for actors, group in zip(EMOBOX_RAVDESS_TEST_ACTORS, groups, strict=True)
                      for actor in actors}  # fmt: skip
    speakers = sorted({u.speaker for u in utterances})
    if speakers != sorted(group_of_actor):
        raise FoldError(
            f"--scheme emobox reproduces EmoBox's RAVDESS folds and needs the 24 RAVDESS actors "
            f"(speakers ravdess01 … ravdess24, from the ravdess loader); found {len(speakers)} "
            f"speakers ({', '.join(speakers[:4])}{' …' if len(speakers) > 4 else ''})"
        )
    return [
        _split(index, group, groups[(index + 1) % len(groups)], utterances,
               lambda u: group_of_actor[u.speaker], "emobox")
        for index, group in enumerate(groups)
    ]  # fmt: skip


def _cross_speaker_folds(utterances: list[Utterance]) -> list[Fold]:
    """Each speaker tested once; 1 in 5 of the other speakers' clips validate (docstring)."""
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 2:
        raise FoldError(f"cross-speaker folds need at least 2 speakers; found {speakers}")
    folds = []
    for index, test_speaker in enumerate(speakers):
        rest = sorted((u for u in utterances if u.speaker != test_speaker), key=lambda u: u.id)
        held = {u.id for u in rest[CROSS_SPEAKER_VAL_EVERY - 1 :: CROSS_SPEAKER_VAL_EVERY]}
        others = "+".join(s for s in speakers if s != test_speaker)
        fold = Fold(
            index=index,
            test_speaker=test_speaker,
            val_speaker=f"{others} (1 in {CROSS_SPEAKER_VAL_EVERY} clips)",
            train=[u for u in rest if u.id not in held],
            val=[u for u in rest if u.id in held],
            test=[u for u in utterances if u.speaker == test_speaker],
            scheme="cross-speaker",
        )
        check_fold(fold)
        folds.append(fold)
    return folds


def describe_protocol(folds: Sequence[Fold]) -> dict[str, object]:
    """What a report says about its folds: the scheme, in words, and speaker independence."""
    scheme = folds[0].scheme if folds else "speaker"
    words = {
        "speaker": "leave-one-speaker-out",
        "session": "leave-one-session-out",
        "official": "the corpus's official train / validation / test split",
        "emobox": "EmoBox's 6 RAVDESS folds (4 test actors each; the next fold's 4 validate)",
        "cross-speaker": "cross-speaker (each speaker tested once; 1 in 5 of the other "
        "speakers' clips validate)",
    }[scheme]
    independent = all(f.speaker_independent for f in folds)
    if independent:
        independence = "speaker-independent"
    elif scheme == "cross-speaker":
        independence = "test speaker unseen; validation shares the training speakers"
    else:
        independence = "NOT speaker-independent (the corpus's own sets share speakers)"
    return {
        "scheme": scheme,
        "protocol": words,
        "speaker_independent": independent,
        "independence": independence,
        "num_folds": len(folds),
    }


def check_fold(fold: Fold) -> None:
    """Raise FoldError unless train, val and test are non-empty and (for speaker, session and
    EmoBox folds) share no speaker. Official folds may share speakers (see
    `Fold.speaker_independent`); cross-speaker folds keep the test speaker out of train and val."""
    splits = {"train": fold.train, "val": fold.val, "test": fold.test}
    for name, split in splits.items():
        if not split:
            raise FoldError(f"{fold.name}: the {name} split is empty")
    if fold.scheme == "official":
        return
    speakers = {name: {u.speaker for u in split} for name, split in splits.items()}
    pairs = [("train", "val"), ("train", "test"), ("val", "test")]
    if fold.scheme == "cross-speaker":  # validation shares the training speakers by design
        pairs = pairs[1:]
    for a, b in pairs:
        shared = speakers[a] & speakers[b]
        if shared:
            raise FoldError(f"{fold.name}: speakers {sorted(shared)} are in both {a} and {b}")


def select_folds(folds: list[Fold], selection: str | None) -> list[Fold]:
    """Pick folds by a comma list of indices, ranges and test speakers: `"0,3-5,Ses01F"`."""
    if selection is None:
        return folds
    if not isinstance(selection, str):
        raise FoldError(f"folds must be a string such as '0,3-5,Ses01F', got {selection!r}")
    chosen: list[Fold] = []
    by_speaker = {f.test_speaker: f for f in folds}
    parts = [p.strip() for p in selection.split(",") if p.strip()]
    if not parts:
        raise FoldError(f"folds {selection!r} names no fold; e.g. 0,3-5 or a test speaker")
    for part in parts:
        if part in by_speaker:
            chosen.append(by_speaker[part])
            continue
        try:
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
        except ValueError:
            raise FoldError(
                f"fold {part!r} is neither a fold index nor a test speaker; "
                f"folds are 0..{len(folds) - 1} ({', '.join(by_speaker)})"
            ) from None
        if last < first:
            raise FoldError(f"fold range {part!r} runs backwards; write {last}-{first}")
        for i in range(first, last + 1):
            if not 0 <= i < len(folds):
                raise FoldError(f"fold index {i} out of range 0..{len(folds) - 1}")
            chosen.append(folds[i])
    unique = {f.index: f for f in chosen}
    return [unique[i] for i in sorted(unique)]
