from __future__ import annotations

from pathlib import Path

import pytest

from emoknn.corpora import Utterance
from emoknn.errors import FoldError
from emoknn.folds import Fold, check_fold, select_folds, speaker_folds


def corpus(speakers_sessions: dict[str, str | None], per_speaker: int = 3) -> list[Utterance]:
    return [
        Utterance(f"{speaker}_{i}", Path(f"/x/{speaker}_{i}.wav"), "sad", speaker, session)
        for speaker, session in speakers_sessions.items()
        for i in range(per_speaker)
    ]


IEMOCAP_LIKE = {f"Ses{s:02d}{g}": f"Ses{s:02d}" for s in range(1, 6) for g in "FM"}


def test_iemocap_layout_gives_ten_folds_with_session_partner_as_validation():
    utterances = corpus(IEMOCAP_LIKE)
    folds = speaker_folds(utterances)
    assert len(folds) == 10
    for fold in folds:
        assert fold.val_speaker[:5] == fold.test_speaker[:5] != ""
        assert fold.val_speaker != fold.test_speaker
        assert {u.speaker for u in fold.test} == {fold.test_speaker}
        assert {u.speaker for u in fold.val} == {fold.val_speaker}
        assert len({u.speaker for u in fold.train}) == 8
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(utterances)
    assert [f.test_speaker for f in folds] == sorted(IEMOCAP_LIKE)
    assert folds[0].name == "fold00-Ses01F"
    # Every speaker is tested exactly once.
    assert sorted(u.id for f in folds for u in f.test) == sorted(u.id for u in utterances)


def test_corpus_without_sessions_uses_next_speaker_for_validation():
    folds = speaker_folds(corpus({"a": None, "b": None, "c": None, "d": None}))
    assert [(f.test_speaker, f.val_speaker) for f in folds] == [
        ("a", "b"),
        ("b", "c"),
        ("c", "d"),
        ("d", "a"),
    ]


def test_larger_sessions_validate_on_next_speaker_of_same_session():
    folds = speaker_folds(corpus({"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": None}))
    pairs = {f.test_speaker: f.val_speaker for f in folds}
    assert pairs == {"a1": "a2", "a2": "a3", "a3": "a1", "b1": "c1", "c1": "a1"}


def test_leave_one_session_out():
    folds = speaker_folds(corpus(IEMOCAP_LIKE), scheme="session")
    assert len(folds) == 5
    assert (folds[0].test_speaker, folds[0].val_speaker) == ("Ses01", "Ses02")
    assert (folds[4].test_speaker, folds[4].val_speaker) == ("Ses05", "Ses01")
    for fold in folds:
        assert len({u.speaker for u in fold.test}) == 2
        assert len({u.speaker for u in fold.train}) == 6


def test_fold_errors():
    with pytest.raises(FoldError, match="at least 3 speakers"):
        speaker_folds(corpus({"a": None, "b": None}))
    with pytest.raises(FoldError, match="needs a session on every utterance"):
        speaker_folds(corpus({"a": None, "b": "x", "c": "y"}), scheme="session")
    with pytest.raises(FoldError, match="unknown fold scheme 'random'"):
        speaker_folds(corpus(IEMOCAP_LIKE), scheme="random")
    mixed = corpus({"a": "s1", "b": "s2", "c": "s3"}) + corpus({"a": "s2"})
    with pytest.raises(FoldError, match="speaker 'a' appears in sessions"):
        speaker_folds(mixed)


def test_check_fold_catches_speaker_overlap():
    utterances = corpus({"a": None, "b": None, "c": None})
    leaky = Fold(0, "a", "b", train=utterances[3:], val=utterances[3:6], test=utterances[:3])
    with pytest.raises(FoldError, match=r"speakers \['b'\] are in both train and val"):
        check_fold(leaky)
    empty = Fold(0, "a", "b", train=[], val=utterances[3:6], test=utterances[:3])
    with pytest.raises(FoldError, match="train split is empty"):
        check_fold(empty)


def test_select_folds():
    folds = speaker_folds(corpus(IEMOCAP_LIKE))
    assert [f.index for f in select_folds(folds, "3,0-1,Ses05M")] == [0, 1, 3, 9]
    assert select_folds(folds, None) == folds
    with pytest.raises(FoldError, match="out of range"):
        select_folds(folds, "12")
    with pytest.raises(FoldError, match="neither a fold index nor a test speaker"):
        select_folds(folds, "Ses09X")


def test_emobox_scheme_reproduces_its_six_ravdess_folds_and_the_next_fold_validates():
    utterances = corpus({f"ravdess{a:02d}": None for a in range(1, 25)}, per_speaker=2)
    folds = speaker_folds(utterances, "emobox")
    test_actors = [sorted(u.speaker[-2:] for u in f.test)[::2] for f in folds]
    assert test_actors == [["01", "11", "20", "21"], ["04", "10", "12", "14"],
                           ["08", "09", "19", "23"], ["03", "05", "07", "24"],
                           ["02", "15", "16", "18"], ["06", "13", "17", "22"]]  # fmt: skip
    assert folds[0].name == "fold00-actors01-11-20-21"
    assert [f.val_speaker for f in folds] == [f.test_speaker for f in folds[1:] + folds[:1]]
    for fold in folds:
        assert (len(fold.train), len(fold.val), len(fold.test)) == (32, 8, 8)
        assert fold.speaker_independent and fold.scheme == "emobox"
    with pytest.raises(FoldError, match=r"needs the 24 RAVDESS actors .* found 23 speakers"):
        speaker_folds(utterances[2:], "emobox")


def test_cross_speaker_folds_test_each_speaker_unseen_and_validate_on_a_fifth_of_the_rest():
    from emoknn.folds import describe_protocol

    utterances = corpus({"tessOAF": None, "tessYAF": None}, per_speaker=10)
    with pytest.raises(FoldError, match="--scheme cross-speaker"):
        speaker_folds(utterances)
    folds = speaker_folds(utterances, "cross-speaker")
    assert [f.test_speaker for f in folds] == ["tessOAF", "tessYAF"]
    for fold in folds:
        assert {u.speaker for u in fold.test} == {fold.test_speaker}
        assert fold.test_speaker not in {u.speaker for u in fold.train + fold.val}
        assert (len(fold.train), len(fold.val), len(fold.test)) == (8, 2, 10)
        assert not {u.id for u in fold.train} & {u.id for u in fold.val}
    protocol = describe_protocol(folds)
    assert not protocol["speaker_independent"]
    assert protocol["independence"] == (
        "test speaker unseen; validation shares the training speakers"
    )
