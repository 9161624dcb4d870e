"""Loaders of the widely used public corpora, each on its real layout in miniature."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoknn.audio import audio_duration, load_audio
from emoknn.corpora import (
    Utterance,
    apply_label_map,
    detect_corpus_kind,
    load_casia,
    load_corpus,
    load_emovo,
    load_esd,
    load_jl,
    load_meld,
    load_msp_podcast,
    load_savee,
    load_shemo,
    load_tess,
)
from emoknn.corpora.msp_podcast import MSP_PODCAST_ALL_CLASSES
from emoknn.errors import AudioError, CorpusError, FoldError
from emoknn.folds import describe_protocol, speaker_folds


def test_utterance_optional_split_and_attributes():
    u = Utterance("a", Path("a.wav"), "angry", "s1")
    assert (u.split, u.arousal, u.valence, u.dominance) == (None, None, None, None)
    v = Utterance("b", Path("b.wav"), "angry", "s1", None, "train", 4, 2.5, 3.25)
    assert v.split == "train" and v.arousal == 4.0 and isinstance(v.arousal, float)
    mapped = apply_label_map([v], {"angry": "mad"}, "test")
    assert mapped[0].label == "mad" and mapped[0].split == "train" and mapped[0].dominance == 3.25
    with pytest.raises(CorpusError, match="split"):
        Utterance("c", Path("c.wav"), "angry", "s1", split="")
    with pytest.raises(CorpusError, match="arousal"):
        Utterance("c", Path("c.wav"), "angry", "s1", arousal=math.nan)
    with pytest.raises(CorpusError, match="valence"):
        Utterance("c", Path("c.wav"), "angry", "s1", valence="high")


# --- helpers -------------------------------------------------------------------------------------


def _wav(path: Path, seconds: float = 0.05, rate: int = 16000) -> Path:
    """A short generated clip (noise) at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
    return path


def _mp4(path: Path, seconds: float = 0.2, rate: int = 48000) -> Path:
    """A short mp4 with one AAC stereo audio stream, as MELD's clips are."""
    av = pytest.importorskip("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "stereo"
        for start in range(0, n, 1024):
            chunk = np.ascontiguousarray(np.stack([tone, tone])[:, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _by_id(utterances):
    return {u.id: u for u in utterances}


# --- acted corpora -------------------------------------------------------------------------------


def test_tess_nested_kaggle_copy_is_counted_once(tmp_path, caplog):
    outer = tmp_path / "tess toronto emotional speech set data"
    inner = outer / "TESS Toronto emotional speech set data"
    names = [
        ("OAF_angry", "OAF_back_angry"), ("OAF_Pleasant_surprise", "OAF_back_ps"),
        ("YAF_sad", "YAF_bite_sad"), ("YAF_fear", "YAF_bite_fear"),
        ("OAF_neutral", "OA_bite_neutral"),
    ]  # fmt: skip
    for folder, stem in names:
        _wav(inner / folder / f"{stem}.wav")
        _wav(outer / folder / f"{stem}.wav")  # the same corpus a second time
    _wav(outer / "OAF_angry" / "._OAF_back_angry.wav")  # macOS resource fork
    with caplog.at_level("WARNING", logger="emoknn.corpora"):
        utterances = load_tess(tmp_path)
    assert "5 clip(s) appear more than once" in caplog.text
    by_id = _by_id(utterances)
    assert sorted(by_id) == [
        "tess/OAF_back_angry", "tess/OAF_back_ps", "tess/OAF_bite_neutral", "tess/YAF_bite_fear",
        "tess/YAF_bite_sad",
    ]  # fmt: skip
    assert by_id["tess/OAF_back_ps"].label == "surprised"
    assert by_id["tess/YAF_bite_fear"].label == "fearful"
    assert {u.speaker for u in utterances} == {"tessOAF", "tessYAF"}
    assert detect_corpus_kind(tmp_path) == "tess"
    four = load_corpus(tmp_path, "tess", label_map="four")
    assert sorted(u.label for u in four) == ["angry", "neutral", "sad"]


def test_savee_official_and_flat_layouts_keep_speaker_in_id(tmp_path):
    official = tmp_path / "official" / "AudioData"
    for speaker in ("DC", "JE", "JK", "KL"):
        for stem in ("a01", "sa02", "su03", "n30"):
            _wav(official / speaker / f"{stem}.wav")
    (official / "Info.txt").write_text("SAVEE", encoding="utf-8")
    utterances = load_savee(tmp_path / "official")
    assert len(utterances) == 16
    assert {u.id for u in utterances if u.id.endswith("_a01")} == {
        "savee/DC_a01", "savee/JE_a01", "savee/JK_a01", "savee/KL_a01",
    }  # fmt: skip
    by_id = _by_id(utterances)
    assert (by_id["savee/JK_sa02"].label, by_id["savee/JK_sa02"].speaker) == ("sad", "saveeJK")
    assert by_id["savee/KL_su03"].label == "surprised"
    flat = tmp_path / "kaggle" / "ALL"
    for stem in ("DC_a01", "JE_d02", "JK_f03", "KL_h04"):
        _wav(flat / f"{stem}.wav")
    kaggle = load_savee(tmp_path / "kaggle")
    assert [(u.id, u.label, u.speaker) for u in kaggle] == [
        ("savee/DC_a01", "angry", "saveeDC"), ("savee/JE_d02", "disgust", "saveeJE"),
        ("savee/JK_f03", "fearful", "saveeJK"), ("savee/KL_h04", "happy", "saveeKL"),
    ]  # fmt: skip
    assert detect_corpus_kind(tmp_path / "official") == "savee"
    assert detect_corpus_kind(tmp_path / "kaggle") == "savee"


def test_emovo_names_and_documents_folder(tmp_path):
    root = tmp_path / "EMOVO"
    for speaker in ("f1", "f2", "f3", "m1", "m2", "m3"):
        for emotion in ("dis", "gio", "neu", "pau", "rab", "sor", "tri"):
            _wav(root / speaker / f"{emotion}-{speaker}-b1.wav")
    (root / "Documents").mkdir()
    (root / "Documents" / "readme.pdf").write_bytes(b"%PDF")
    utterances = load_emovo(tmp_path)
    assert len(utterances) == 42 and len({u.speaker for u in utterances}) == 6
    by_id = _by_id(utterances)
    assert by_id["emovo/gio-m2-b1"].label == "happy"
    assert by_id["emovo/pau-f3-b1"].label == "fearful"
    assert by_id["emovo/rab-f1-b1"].speaker == "emovof1"
    assert detect_corpus_kind(tmp_path) == "emovo"


def test_shemo_names(tmp_path):
    for stem in ("F01A01", "F01N02", "F12W01", "M03S01", "M03H02", "M44F01"):
        _wav(tmp_path / ("female" if stem[0] == "F" else "male") / f"{stem}.wav")
    utterances = load_shemo(tmp_path)
    assert [(u.id, u.label, u.speaker) for u in utterances] == [
        ("shemo/F01A01", "angry", "shemoF01"), ("shemo/F01N02", "neutral", "shemoF01"),
        ("shemo/F12W01", "surprised", "shemoF12"), ("shemo/M03H02", "happy", "shemoM03"),
        ("shemo/M03S01", "sad", "shemoM03"), ("shemo/M44F01", "fearful", "shemoM44"),
    ]  # fmt: skip
    assert detect_corpus_kind(tmp_path) == "shemo"


def test_casia_repeated_numbers_across_folders(tmp_path):
    for speaker in ("liuchanhg", "wangzhe", "zhaoquanyin", "zhaozuoxiang"):
        for emotion in ("angry", "fear", "happy", "neutral", "sad", "surprise"):
            _wav(tmp_path / "CASIA" / speaker / emotion / "201.wav")
    _wav(tmp_path / "CASIA" / "wangzhe" / "notes" / "201.wav")  # not an emotion folder
    utterances = load_casia(tmp_path)
    assert len(utterances) == 24 and len({u.id for u in utterances}) == 24
    by_id = _by_id(utterances)
    assert by_id["casia/wangzhe/surprise/201"].label == "surprised"
    assert by_id["casia/liuchanhg/fear/201"].speaker == "casialiuchanhg"
    assert detect_corpus_kind(tmp_path) == "casia"


def test_jl_primary_and_secondary_emotions(tmp_path):
    folder = tmp_path / "Raw JL corpus (unchecked and unannotated)" / "JL(wav+txt)"
    stems = ["female1_angry_1a_1", "female2_excited_10b_2", "male1_apologetic_3a_1",
             "male2_sad_5a_2", "male2_happy_5a_2"]  # fmt: skip
    for stem in stems:
        _wav(folder / f"{stem}.wav")
        (folder / f"{stem}.txt").write_text("Kia ora", encoding="utf-8")
    utterances = load_jl(tmp_path)
    assert [(u.id, u.label, u.speaker) for u in utterances] == [
        ("jl/female1_angry_1a_1", "angry", "jlfemale1"),
        ("jl/female2_excited_10b_2", "excited", "jlfemale2"),
        ("jl/male1_apologetic_3a_1", "apologetic", "jlmale1"),
        ("jl/male2_happy_5a_2", "happy", "jlmale2"),
        ("jl/male2_sad_5a_2", "sad", "jlmale2"),
    ]
    assert detect_corpus_kind(tmp_path) == "jl"
    assert {u.label for u in load_corpus(tmp_path, "jl", label_map="four")} == {
        "angry", "happy", "sad",
    }  # fmt: skip


def test_esd_official_split_folders_and_kaggle_copy(tmp_path):
    root = tmp_path / "Emotion Speech Dataset"
    number = 0
    for speaker in ("0001", "0011"):
        for emotion in ("Angry", "Happy", "Neutral", "Sad", "Surprise"):
            for split in ("train", "evaluation", "test"):
                number += 1
                _wav(root / speaker / emotion / split / f"{speaker}_{number:06d}.wav")
        # transcripts in per-speaker encodings (gb2312 for Mandarin speakers): never read
        line = f"{speaker}_000001\t打远一看\t中立\n"
        (root / speaker / f"{speaker}.txt").write_bytes(line.encode("gb2312"))
    utterances = load_esd(tmp_path)
    assert len(utterances) == 30
    assert {u.split for u in utterances} == {"train", "evaluation", "test"}
    by_id = _by_id(utterances)
    assert (by_id["esd/0001_000002"].label, by_id["esd/0001_000002"].split) == (
        "angry", "evaluation",
    )  # fmt: skip
    assert by_id["esd/0011_000030"].label == "surprised"
    assert by_id["esd/0011_000030"].speaker == "esd0011"
    assert detect_corpus_kind(tmp_path) == "esd"
    kaggle = tmp_path / "kaggle"
    _wav(kaggle / "0005" / "Sad" / "0005_001051.wav")
    _wav(kaggle / "0005" / "Happy" / "0005_000701.wav")
    _wav(kaggle / "0006" / "Happy" / "0007_000701.wav")  # speaker folder disagrees: not ESD's
    copy = load_esd(kaggle)
    assert [(u.id, u.label, u.split) for u in copy] == [
        ("esd/0005_000701", "happy", None), ("esd/0005_001051", "sad", None),
    ]  # fmt: skip


def test_acted_loader_errors(tmp_path):
    with pytest.raises(CorpusError, match="no tess audio files"):
        load_tess(tmp_path)
    with pytest.raises(CorpusError, match="not a directory"):
        load_casia(tmp_path / "missing")
    _wav(tmp_path / "x" / "hello.wav")
    with pytest.raises(CorpusError, match="cannot tell which corpus"):
        detect_corpus_kind(tmp_path / "x")


# --- corpora with official splits ----------------------------------------------------------------

MSP_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
MSP_ROWS = [
    ("MSP-PODCAST_0001_0008.wav", "A", "5.2", "2.0", "4.6", "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0010.wav", "N", "4.0", "4.0", "4.2", "127", "Male", "Train"),
    ("MSP-PODCAST_0002_0001.wav", "X", "3.0", "3.5", "3.0", "88", "Female", "Train"),
    ("MSP-PODCAST_0002_0002.wav", "O", "3.0", "3.5", "3.0", "88", "Female", "Train"),
    ("MSP-PODCAST_0003_0001.wav", "H", "5.8", "6.1", "5.0", "Unknown", "Unknown", "Train"),
    ("MSP-PODCAST_0003_0002.wav", "S", "2.4", "2.2", "3.0", "Unknown", "Unknown", "Train"),
    ("MSP-PODCAST_0004_0001.wav", "U", "5.0", "4.5", "4.0", "310", "Female", "Development"),
    ("MSP-PODCAST_0005_0001.wav", "C", "4.4", "2.8", "5.2", "412", "Male", "Test1"),
    ("MSP-PODCAST_0006_0001.wav", "F", "4.8", "2.6", "3.4", "977", "Female", "Test2"),
    ("MSP-PODCAST_0007_0001.wav", "D", "4.1", "2.0", "4.4", "", "Unknown", "Test2"),
    ("MSP-PODCAST_0008_0001.wav", "", "", "", "", "1202", "Male", "Test3"),  # labels hidden
]  # fmt: skip


def _msp_release(root: Path, labels_name: str = "labels_consensus.csv", rows=MSP_ROWS) -> Path:
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / labels_name).write_text(
        MSP_HEADER + "".join(",".join(row) + "\n" for row in rows), encoding="utf-8"
    )
    for row in rows:
        _wav(root / "Audios" / row[0])
    for name in ("readme.txt", "Speaker_ids.txt", "Partition.txt"):
        (root / name).write_text("", encoding="utf-8")
    return root


def test_msp_podcast_eight_classes_splits_attributes_unknown_speakers(tmp_path):
    root = _msp_release(tmp_path / "MSP-Podcast")
    utterances = load_msp_podcast(root)
    by_id = _by_id(utterances)
    assert len(utterances) == 8  # X, O and the hidden Test3 row are left out
    angry = by_id["MSP-PODCAST_0001_0008"]
    assert (angry.label, angry.speaker, angry.split) == ("angry", "msp127", "train")
    assert (angry.arousal, angry.valence, angry.dominance) == (5.2, 2.0, 4.6)
    assert angry.path == root / "Audios" / "MSP-PODCAST_0001_0008.wav"
    assert by_id["MSP-PODCAST_0003_0001"].speaker == "mspUnknown/MSP-PODCAST_0003_0001"
    assert by_id["MSP-PODCAST_0003_0002"].speaker == "mspUnknown/MSP-PODCAST_0003_0002"
    assert by_id["MSP-PODCAST_0007_0001"].speaker.startswith("mspUnknown/")
    assert {u.split for u in utterances} == {"train", "development", "test1", "test2"}
    assert {u.label for u in utterances} == {
        "angry", "neutral", "happy", "sad", "surprised", "contempt", "fearful", "disgust",
    }  # fmt: skip
    assert detect_corpus_kind(root) == "msp-podcast"
    everything = load_msp_podcast(root, label_map=MSP_PODCAST_ALL_CLASSES)
    assert {u.label for u in everything} >= {"other", "no-agreement"} and len(everything) == 10
    four = load_corpus(root, label_map="four")
    assert sorted(u.label for u in four) == ["angry", "happy", "neutral", "sad"]
    assert four[0].arousal is not None  # the attributes survive the label map


def test_msp_podcast_older_release_spellings(tmp_path):
    rows = [(*r[:7], "Validation") if r[7] == "Development" else r for r in MSP_ROWS]
    root = _msp_release(tmp_path / "old", labels_name="labels_concensus.csv", rows=rows)
    (root / "Audios").rename(root / "Audio")
    utterances = load_corpus(root)
    assert "validation" in {u.split for u in utterances}
    assert all(u.path.parent.name == "Audio" and u.path.is_file() for u in utterances)


def test_msp_podcast_bad_rows_and_missing_audio(tmp_path):
    root = _msp_release(tmp_path / "a")
    (root / "Audios" / "MSP-PODCAST_0001_0008.wav").unlink()
    with pytest.raises(CorpusError, match="1 of 8 audio files are missing"):
        load_msp_podcast(root)
    assert len(load_msp_podcast(root, skip_missing=True)) == 7
    bad = _msp_release(tmp_path / "b", rows=[(*MSP_ROWS[0][:2], "high", *MSP_ROWS[0][3:])])
    with pytest.raises(CorpusError, match=r"labels_consensus.csv:2: EmoAct 'high' is not a number"):
        load_msp_podcast(bad)
    odd = _msp_release(tmp_path / "c", rows=[(*MSP_ROWS[0][:1], "Q", *MSP_ROWS[0][2:])])
    with pytest.raises(CorpusError, match="EmoClass 'Q'"):
        load_msp_podcast(odd)
    (tmp_path / "d" / "Labels").mkdir(parents=True)
    (tmp_path / "d" / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass\n")
    with pytest.raises(CorpusError, match="lacks column"):
        load_msp_podcast(tmp_path / "d")


MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
    "StartTime,EndTime\n"
)


def _meld_release(root: Path) -> Path:
    """MELD.Raw in miniature: the three CSVs (one with a mis-encoded quote, as the real ones),
    mp4 clips per split folder, the known-bad rows, and an unannotated extra clip."""
    rows = {
        "train": [
            (1, "Oh my God!", "Rachel", "surprise", "positive", 0, 0),
            (2, "I\u2019m fine.", "Monica", "neutral", "neutral", 0, 1),
            (3, "Get out!", "Ross", "anger", "negative", 1, 0),
            (4, "Broken clip.", "Joey", "joy", "positive", 125, 3),
        ],
        "dev": [
            (1, "Hi.", "Chandler", "joy", "positive", 0, 0),
            (2, "Bye.", "Phoebe", "sadness", "negative", 1, 0),
            (3, "Missing clip.", "Joey", "fear", "negative", 110, 7),
        ],
        "test": [
            (1, "Eww.", "Rachel", "disgust", "negative", 0, 0),
            (2, "Okay.", "Mr.  Heckles", "fear", "negative", 3, 1),
        ],
    }
    folders = {"train": "train_splits", "dev": "dev_splits_complete",
               "test": "output_repeated_splits_test"}  # fmt: skip
    for split, split_rows in rows.items():
        lines = [MELD_HEADER] + [
            f'{n},"{text}",{speaker},{emotion},{sentiment},{d},{u},1,1,'
            '"00:16:16,059","00:16:21,731"\n'
            for n, text, speaker, emotion, sentiment, d, u in split_rows
        ]
        (root / f"{split}_sent_emo.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}_sent_emo.csv").write_bytes("".join(lines).encode("cp1252"))
        for _, _, _, _, _, d, u in split_rows:
            if (split, d, u) != ("dev", 110, 7):  # missing from the release
                _mp4(root / folders[split] / f"dia{d}_utt{u}.mp4")
    (root / folders["train"] / "dia125_utt3.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42broken")
    _mp4(root / folders["train"] / "dia999_utt0.mp4")  # extra clip without a CSV row
    return root


def test_meld_ids_include_split_known_bad_skipped_and_mp4_decodes(tmp_path, caplog):
    root = _meld_release(tmp_path / "MELD.Raw")
    with caplog.at_level("WARNING", logger="emoknn.corpora"):
        utterances = load_meld(tmp_path)  # found one folder down
    assert "train dia125_utt3 (corrupt" in caplog.text and "dev dia110_utt7 (missing" in caplog.text
    by_id = _by_id(utterances)
    assert sorted(by_id) == [
        "meld/dev/dia0_utt0", "meld/dev/dia1_utt0", "meld/test/dia0_utt0", "meld/test/dia3_utt1",
        "meld/train/dia0_utt0", "meld/train/dia0_utt1", "meld/train/dia1_utt0",
    ]  # fmt: skip
    assert (by_id["meld/train/dia0_utt0"].label, by_id["meld/train/dia0_utt0"].split) == (
        "surprised", "train",
    )  # fmt: skip
    assert by_id["meld/dev/dia0_utt0"].label == "happy"
    assert by_id["meld/test/dia3_utt1"].speaker == "meld/Mr. Heckles"
    assert by_id["meld/train/dia0_utt0"].speaker == by_id["meld/test/dia0_utt0"].speaker
    assert by_id["meld/dev/dia0_utt0"].path == root / "dev_splits_complete" / "dia0_utt0.mp4"
    assert detect_corpus_kind(tmp_path) == "meld"
    samples = load_audio(by_id["meld/test/dia0_utt0"].path)
    assert samples.dtype == np.float32 and 0.15 < samples.shape[0] / 16000 < 0.3
    assert 0.15 < audio_duration(by_id["meld/test/dia0_utt0"].path) < 0.3
    with pytest.raises(AudioError, match=r"dia125_utt3\.mp4: cannot decode"):
        load_audio(root / "train_splits" / "dia125_utt3.mp4")


def test_meld_missing_parts(tmp_path):
    with pytest.raises(CorpusError, match="no MELD CSVs"):
        load_meld(tmp_path)
    (tmp_path / "dev_sent_emo.csv").write_text(MELD_HEADER + '1,"Hi",Joey,joy,positive,0,0\n')
    with pytest.raises(CorpusError, match="no dev_splits_complete/ folder"):
        load_meld(tmp_path)
    (tmp_path / "dev_splits_complete").mkdir()
    with pytest.raises(CorpusError, match="1 of 1 audio files are missing"):
        load_meld(tmp_path)
    (tmp_path / "dev_sent_emo.csv").write_text(MELD_HEADER + '1,"Hi",Joey,happy,positive,0,0\n')
    with pytest.raises(CorpusError, match="Emotion 'happy' is not one of"):
        load_meld(tmp_path)


# --- the official protocol -----------------------------------------------------------------------


def test_official_folds_msp_podcast_two_test_sets(tmp_path):
    utterances = load_msp_podcast(_msp_release(tmp_path / "msp"))
    folds = speaker_folds(utterances, "official")
    assert [(f.name, f.val_speaker) for f in folds] == [
        ("fold00-test1", "development"), ("fold01-test2", "development"),
    ]  # fmt: skip
    assert all(f.scheme == "official" for f in folds)
    assert {u.split for u in folds[0].train} == {"train"} and len(folds[0].train) == 4
    assert [u.id for u in folds[1].test] == ["MSP-PODCAST_0006_0001", "MSP-PODCAST_0007_0001"]
    assert describe_protocol(folds) == {
        "scheme": "official", "protocol": "the corpus's official train / validation / test split",
        "speaker_independent": True, "independence": "speaker-independent", "num_folds": 2,
    }  # fmt: skip


def test_official_folds_report_shared_speakers_instead_of_refusing(tmp_path):
    def u(i, speaker, split):
        return Utterance(f"u{i}", Path(f"u{i}.wav"), "angry", speaker, None, split)

    meld_like = [u(0, "Rachel", "train"), u(1, "Ross", "train"), u(2, "Rachel", "dev"),
                 u(3, "Joey", "test")]  # fmt: skip
    (fold,) = speaker_folds(meld_like, "official")
    assert (fold.test_speaker, fold.val_speaker, fold.speaker_independent) == ("test", "dev", False)
    assert describe_protocol([fold])["speaker_independent"] is False
    loso = speaker_folds([u(0, "a", None), u(1, "b", None), u(2, "c", None)])
    assert describe_protocol(loso)["scheme"] == "speaker"
    assert describe_protocol(loso)["speaker_independent"] is True
    with pytest.raises(FoldError, match="this corpus has no official split"):
        speaker_folds([u(0, "a", None), u(1, "b", "train")], "official")
    with pytest.raises(FoldError, match="official splits found: test, train"):
        speaker_folds([u(0, "a", "train"), u(1, "b", "test")], "official")
    with pytest.raises(FoldError, match="official splits found: dev, extra, train"):
        speaker_folds([u(0, "a", "train"), u(1, "b", "dev"), u(2, "c", "extra")], "official")


def test_official_folds_esd(tmp_path):
    for number, split in enumerate(("train", "evaluation", "test"), start=1):
        for speaker in ("0001", "0002"):
            _wav(tmp_path / speaker / "Angry" / split / f"{speaker}_{number:06d}.wav")
    (fold,) = speaker_folds(load_esd(tmp_path), "official")
    assert (fold.name, fold.val_speaker, len(fold.train), len(fold.val), len(fold.test)) == (
        "fold00-test", "evaluation", 2, 2, 2,
    )  # fmt: skip
    assert fold.speaker_independent is False  # ESD's official split is not speaker-independent


def test_report_says_protocol_and_speaker_independence():
    from emoknn.report import _protocol_words

    assert _protocol_words({}).startswith("leave-one-speaker-out, speaker-independent")
    official = {"scheme": "official", "protocol": "the corpus's official train / validation / "
                "test split", "speaker_independent": False}  # fmt: skip
    words = _protocol_words({"protocol": official})
    assert words.startswith("the corpus's official") and "NOT speaker-independent" in words
    official["speaker_independent"] = True
    assert "speaker-independent: no speaker is in two sets" in _protocol_words(
        {"protocol": official}
    )
    assert _protocol_words({"protocol": {"scheme": "session"}}).startswith("leave-one-session-out")


def test_label_map_choices_json_file_and_errors(tmp_path):
    for stem in ("F01A01", "F01N02", "M03W01", "M03S01"):
        _wav(tmp_path / "shemo" / ("female" if stem[0] == "F" else "male") / f"{stem}.wav")
    assert len(load_corpus(tmp_path / "shemo", "shemo", label_map="default")) == 4
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"angry": "negative", "sad": "negative", "neutral": "neutral",
                                   "surprised": None}))  # fmt: skip
    mapped = load_corpus(tmp_path / "shemo", label_map=mapping)
    assert sorted(u.label for u in mapped) == ["negative", "negative", "neutral"]
    mapping.write_text("[1, 2]")
    with pytest.raises(CorpusError, match="non-empty object of class name"):
        load_corpus(tmp_path / "shemo", label_map=mapping)
    with pytest.raises(CorpusError, match="expected default, four, or a JSON file"):
        load_corpus(tmp_path / "shemo", label_map="five")
    # A key naming no class of the corpus is refused (a typo would change nothing, silently).
    with pytest.raises(CorpusError, match="'calm', not a class of this corpus"):
        load_corpus(tmp_path / "shemo", label_map={"calm": "calm"})


def test_model_card_names_the_fold_by_its_scheme():
    from emoknn.card import _fold_words

    assert _fold_words({"test_speaker": "Ses01F", "val_speaker": "Ses01M"}) == (
        "test speaker Ses01F, validation speaker Ses01M"
    )
    official = {"scheme": "official", "test_speaker": "test1", "val_speaker": "development"}
    assert _fold_words(official) == (
        "the corpus's official split: test set test1, validation set development"
    )
