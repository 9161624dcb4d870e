from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoknn.corpora import (
    FOUR_CLASS_LABELS,
    detect_corpus_kind,
    generate_synthetic_corpus,
    load_corpus,
    load_cremad,
    load_emodb,
    load_iemocap,
    load_manifest,
    load_ravdess,
    load_synthetic,
)
from emoknn.errors import CorpusError

BLIP = np.full(480, 0.1, dtype=np.float32)

# The real IEMOCAP counts of the codes the paper keeps (hap + exc = 1,636 happy) plus some
# codes it leaves out, spread over 5 sessions × 2 speakers.
IEMOCAP_CODES = {
    "ang": 1103,
    "hap": 595,
    "exc": 1041,
    "neu": 1708,
    "sad": 1084,
    "fru": 40,
    "xxx": 30,
    "sur": 10,
}


def write_iemocap_tree(root: Path) -> None:
    """Generate a tree in the official release layout, with junk beside the real files."""
    codes = [code for code, n in IEMOCAP_CODES.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    rng.shuffle(codes)
    per_dialog: dict[tuple[int, str], list[str]] = {}
    for i, code in enumerate(codes):
        session = i % 5 + 1
        dialog = f"Ses{session:02d}{'FM'[i % 2]}_{'impro' if i % 3 else 'script'}{i % 7:02d}"
        per_dialog.setdefault((session, dialog), []).append(code)
    for (session, dialog), dialog_codes in per_dialog.items():
        session_dir = root / f"Session{session}"
        evaluation_dir = session_dir / "dialog" / "EmoEvaluation"
        (evaluation_dir / "Categorical").mkdir(parents=True, exist_ok=True)
        wav_dir = session_dir / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True, exist_ok=True)
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for j, code in enumerate(dialog_codes):
            # The speaker's letter is the utterance suffix's, which often differs from the dialog's.
            utterance = f"{dialog}_{'MF'[j % 2]}{j:03d}"
            lines += [
                f"[{j * 3.1:.4f} - {j * 3.1 + 2.5:.4f}]\t{utterance}\t{code}\t"
                "[2.5000, 3.0000, 2.5000]",
                "C-E1:\tNeutral state;\t()",
                "A-E3:\tval 3; act 2; dom  2;\t()",
                "",
            ]
            sf.write(wav_dir / f"{utterance}.wav", BLIP, 16000)
        (evaluation_dir / f"{dialog}.txt").write_text("\n".join(lines))
        (evaluation_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 mac junk")
        (evaluation_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text("junk")


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("IEMOCAP_full_release")
    write_iemocap_tree(root)
    return root


def test_iemocap_counts_and_label_merge(iemocap_root):
    utterances = load_iemocap(iemocap_root)
    assert len(utterances) == 5531
    assert Counter(u.label for u in utterances) == {
        "angry": 1103,
        "happy": 1636,
        "neutral": 1708,
        "sad": 1084,
    }
    assert len({u.id for u in utterances}) == 5531


def test_iemocap_speaker_is_session_plus_suffix_letter(iemocap_root):
    utterances = {u.id: u for u in load_iemocap(iemocap_root)}
    mismatched = [u for u in utterances.values() if u.id[5] != u.id.rsplit("_", 1)[1][0]]
    assert mismatched, "the generated tree must contain F dialogs with M utterances"
    for u in mismatched:
        assert u.speaker == u.id[:5] + u.id.rsplit("_", 1)[1][0]
        assert u.session == u.id[:5]
    assert {u.speaker for u in utterances.values()} == {
        f"Ses{s:02d}{g}" for s in range(1, 6) for g in "FM"
    }
    some = next(iter(utterances.values()))
    dialog = some.id.rsplit("_", 1)[0]
    assert some.path == (
        iemocap_root
        / f"Session{int(some.id[3:5])}"
        / "sentences"
        / "wav"
        / dialog
        / f"{some.id}.wav"
    )


def test_iemocap_missing_wav_is_reported_or_skipped(tmp_path):
    write_iemocap_tree(tmp_path)
    victim = sorted((tmp_path / "Session2" / "sentences" / "wav").rglob("*.wav"))[0]
    victim.unlink()
    with pytest.raises(CorpusError, match=rf"1 of \d+ audio files are missing:\n  .*{victim.name}"):
        load_iemocap(tmp_path)
    kept = load_iemocap(tmp_path, skip_missing=True)
    assert victim.stem not in {u.id for u in kept}


def test_iemocap_custom_label_map_and_bad_roots(iemocap_root, tmp_path):
    five = load_iemocap(iemocap_root, label_map={"ang": "angry", "fru": "frustrated"})
    assert Counter(u.label for u in five) == {"angry": 1103, "frustrated": 40}
    with pytest.raises(CorpusError, match=r"no Session1\.\.Session5 folders"):
        load_iemocap(tmp_path)
    with pytest.raises(CorpusError, match="not a directory"):
        load_iemocap(tmp_path / "absent")
    assert detect_corpus_kind(iemocap_root) == "iemocap"
    assert len(load_corpus(iemocap_root)) == 5531


def test_manifest_relative_paths_sessions_and_any_labels(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("a", "b", "c"):
        sf.write(tmp_path / "clips" / f"{name}.wav", BLIP, 16000)
    absolute = tmp_path / "clips" / "c.wav"
    (tmp_path / "m.csv").write_text(
        "path,label,speaker,session\n"
        "clips/a.wav,calm,s1,x\n"
        "clips/b.wav, bored ,s2,\n"
        f"{absolute},calm,s3,x\n"
    )
    utterances = load_manifest(tmp_path / "m.csv")
    assert [u.label for u in utterances] == ["calm", "bored", "calm"]
    assert [u.session for u in utterances] == ["x", None, "x"]
    assert utterances[0].path == tmp_path / "clips" / "a.wav"
    assert utterances[0].id == "clips/a"
    assert utterances[2].path == absolute


def test_manifest_errors(tmp_path):
    (tmp_path / "nohead.csv").write_text("file,emotion\nx.wav,sad\n")
    with pytest.raises(
        CorpusError, match=r"nohead\.csv: manifest lacks column\(s\) path, label, speaker"
    ):
        load_manifest(tmp_path / "nohead.csv")
    (tmp_path / "empty_field.csv").write_text("path,label,speaker\nx.wav,,s1\n")
    with pytest.raises(CorpusError, match=r"empty_field\.csv:2: empty label"):
        load_manifest(tmp_path / "empty_field.csv")
    (tmp_path / "missing.csv").write_text("path,label,speaker\nghost.wav,sad,s1\n")
    with pytest.raises(CorpusError, match=r"1 of 1 audio files are missing:\n  .*ghost\.wav"):
        load_manifest(tmp_path / "missing.csv")
    with pytest.raises(CorpusError, match="manifest file not found"):
        load_manifest(tmp_path / "absent.csv")


def touch_audio(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sf.write(folder / name, BLIP, 16000)


def test_ravdess_names(tmp_path):
    touch_audio(
        tmp_path / "Actor_01",
        [
            "03-01-05-01-02-01-01.wav",
            "03-01-02-02-01-02-01.wav",
            "03-02-03-01-01-01-01.wav",
            "01-01-05-01-01-01-01.wav",
            "readme.wav",
        ],
    )
    touch_audio(tmp_path / "Actor_12", ["03-01-01-01-01-01-12.wav"])
    utterances = load_ravdess(tmp_path)
    assert {(u.label, u.speaker) for u in utterances} == {
        ("angry", "ravdess01"),
        ("calm", "ravdess01"),
        ("neutral", "ravdess12"),
    }
    assert all(u.session is None for u in utterances)
    with_song = load_ravdess(tmp_path, include_song=True)
    assert ("happy", "ravdess01") in {(u.label, u.speaker) for u in with_song}
    four = load_ravdess(tmp_path, label_map=FOUR_CLASS_LABELS)
    assert sorted(u.label for u in four) == ["angry", "neutral"]  # calm is dropped


def test_cremad_names_and_label_mapping(tmp_path):
    touch_audio(
        tmp_path / "AudioWAV",
        [
            "1001_DFA_ANG_XX.wav",
            "1001_IEO_HAP_HI.wav",
            "1091_TSI_DIS_XX.wav",
            "1091_TSI_ZZZ_XX.wav",
        ],
    )
    utterances = load_cremad(tmp_path)
    assert {(u.label, u.speaker) for u in utterances} == {
        ("angry", "cremad1001"),
        ("happy", "cremad1001"),
        ("disgust", "cremad1091"),
    }
    merged = load_cremad(tmp_path, label_map={"angry": "negative", "disgust": "negative"})
    assert sorted(u.label for u in merged) == ["negative", "negative"]
    with pytest.raises(CorpusError, match="keeps none of the labels"):
        load_cremad(tmp_path, label_map={"calm": "calm"})


def test_emodb_names(tmp_path):
    touch_audio(tmp_path / "wav", ["03a01Wa.wav", "03a01Fa.wav", "16b10Tb.wav", "10a02Lb.wav"])
    utterances = load_emodb(tmp_path)
    assert {(u.label, u.speaker) for u in utterances} == {
        ("angry", "emodb03"),
        ("happy", "emodb03"),
        ("sad", "emodb16"),
        ("bored", "emodb10"),
    }
    (tmp_path / "unrelated").mkdir()
    touch_audio(tmp_path / "unrelated", ["interview.wav"])
    with pytest.raises(CorpusError, match="no emodb audio files with recognisable names"):
        load_emodb(tmp_path / "unrelated")


def file_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.wav")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_synthetic_corpus_is_deterministic_and_honest(tmp_path, small_synthetic_corpus):
    again = tmp_path / "again"
    generate_synthetic_corpus(
        again, seed=0, num_sessions=3, utterances_per_class=3, min_seconds=0.5, max_seconds=1.0
    )
    assert file_digest(again) == file_digest(small_synthetic_corpus)
    other = tmp_path / "other"
    generate_synthetic_corpus(
        other, seed=1, num_sessions=3, utterances_per_class=3, min_seconds=0.5, max_seconds=1.0
    )
    assert file_digest(other) != file_digest(small_synthetic_corpus)

    utterances = load_synthetic(small_synthetic_corpus)
    assert len(utterances) == 3 * 2 * 4 * 3
    assert Counter(u.label for u in utterances) == {
        c: 18 for c in ("angry", "happy", "neutral", "sad")
    }
    assert {u.speaker for u in utterances} == {f"Syn0{s}{g}" for s in (1, 2, 3) for g in "FM"}
    assert all(u.session == u.speaker[:5] for u in utterances)
    marker = (small_synthetic_corpus / "SYNTHETIC_CORPUS.txt").read_text()
    assert "not emotional speech" in marker
    assert detect_corpus_kind(small_synthetic_corpus) == "synthetic"
    samples, rate = sf.read(utterances[0].path)
    assert rate == 16000 and 0.5 <= len(samples) / rate <= 1.0 and np.abs(samples).max() <= 0.99


def test_synthetic_classes_differ_in_prosody(small_synthetic_corpus):
    """Loudness and brightness follow the class means (angry > sad) on average."""
    utterances = load_synthetic(small_synthetic_corpus)
    rms: dict[str, list[float]] = {}
    for u in utterances:
        samples, _ = sf.read(u.path)
        rms.setdefault(u.label, []).append(float(np.sqrt(np.mean(samples**2))))
    assert np.mean(rms["angry"]) > np.mean(rms["neutral"]) > np.mean(rms["sad"])


def test_not_a_synthetic_corpus(tmp_path):
    with pytest.raises(CorpusError, match="not a synthetic corpus"):
        load_synthetic(tmp_path)
    with pytest.raises(CorpusError, match="cannot tell which corpus"):
        load_corpus(tmp_path)
