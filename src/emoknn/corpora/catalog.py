"""What emoknn knows about each supported corpus: licence, access, size, layout, protocol, and
where the official archive is with its byte size and checksum when one is published.

Every fact comes from `shared/CORPORA.md` (public sources cited there); "not published" means no
public record was found, never a guess. `emoknn corpus list` prints this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Archive:
    """One file to fetch. `size`/`md5`/`sha256` are None where no public record exists."""

    url: str
    filename: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    inner: tuple[str, ...] = ()  # archives inside it to extract in turn (MELD's nested tars)


@dataclass(frozen=True)
class FileList:
    """A corpus fetched file by file: from a manifest shipped with emoknn (`manifest`, lines
    `path<TAB>size<TAB>sha256`) under `base_url`, or from a Dataverse dataset's file listing
    (`dataverse`: `base_url` is the server, `dataset` the persistent id), whose md5 is checked."""

    source: str  # "manifest" | "dataverse"
    base_url: str
    manifest: str | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class CorpusInfo:
    name: str  # the `--kind` / NAME used on the command line
    title: str
    language: str
    licence: str
    accept: bool  # the licence restricts use (non-commercial, share-alike, research-only): ask
    access: str  # "download" (emoknn fetches it) or "manual" (register, then `corpus verify`)
    utterances: int | None  # what the loader returns with its default classes
    speakers: int | None
    classes: str
    size: str
    protocol: str
    where: str  # registration page / official source
    tree: str  # the expected layout, for users placing a manual copy
    archives: tuple[Archive, ...] = ()
    files: FileList | None = None
    official_split: tuple[str, ...] = ()
    known_bad: tuple[str, ...] = ()
    short: tuple[str, str] = ("", "")  # (licence, protocol) in a few words, for `corpus list`
    notes: tuple[str, ...] = field(default_factory=tuple)


CREMAD_BASE = "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master"

CORPORA: dict[str, CorpusInfo] = {
    info.name: info
    for info in (
        CorpusInfo(
            name="iemocap",
            short=("release form", "LOSO 10 / sessions 5"),
            title="IEMOCAP",
            language="en",
            licence="USC SAIL release form",
            accept=True,
            access="manual",
            utterances=5531,
            speakers=10,
            classes="4 (exc merged into hap)",
            size="not listed",
            protocol="leave-one-speaker-out (10) or leave-one-session-out (5)",
            where="USC SAIL (release form on the IEMOCAP page)",
            tree="IEMOCAP_full_release/Session{1..5}/dialog/EmoEvaluation/*.txt\n"
            "IEMOCAP_full_release/Session{1..5}/sentences/wav/<dialog>/<utt>.wav",
        ),
        CorpusInfo(
            name="emodb",
            short=("none stated", "LOSO 10"),
            title="Berlin EmoDB",
            language="de",
            licence="no licence text on the site; audeering republishes it as CC0-1.0",
            accept=False,
            access="download",
            utterances=535,
            speakers=10,
            classes="7",
            size="≈40.5 MB zip (unverified)",
            protocol="leave-one-speaker-out (10)",
            where="http://emodb.bilderbar.info/",
            tree="wav/03a01Fa.wav (535 files)",
            archives=(
                Archive("http://emodb.bilderbar.info/download/download.zip", "download.zip"),
            ),
            notes=("no checksum is published: the sha256 seen is recorded",),
        ),
        CorpusInfo(
            name="ravdess",
            short=("CC BY-NC-SA 4.0", "LOSO 24"),
            title="RAVDESS (speech)",
            language="en",
            licence="CC BY-NC-SA 4.0 (non-commercial, share-alike; commercial licence sold "
            "separately)",
            accept=True,
            access="download",
            utterances=1440,
            speakers=24,
            classes="8",
            size="208.5 MB zip",
            protocol="leave-one-speaker-out (24)",
            where="https://zenodo.org/record/1188976",
            tree="Actor_01/03-01-01-01-01-01-01.wav ... Actor_24/ (1,440 files)",
            archives=(
                Archive(
                    "https://zenodo.org/record/1188976/files/Audio_Speech_Actors_01-24.zip",
                    "Audio_Speech_Actors_01-24.zip",
                    size=208_468_073,
                    md5="bc696df654c87fed845eb13823edef8a",
                ),
            ),
        ),
        CorpusInfo(
            name="cremad",
            short=("ODbL + DbCL", "LOSO 91"),
            title="CREMA-D",
            language="en",
            licence="ODbL 1.0 + DbCL 1.0 (share-alike); the maintainers ask users to fill a "
            "Google form",
            accept=True,
            access="download",
            utterances=7442,
            speakers=91,
            classes="6",
            size="605.9 MB (7,442 files)",
            protocol="leave-one-speaker-out (91)",
            where="https://github.com/CheyneyComputerScience/CREMA-D",
            tree="AudioWAV/1001_DFA_ANG_XX.wav ... (7,442 files)",
            files=FileList("manifest", CREMAD_BASE, manifest="cremad_audiowav_lfs_sha256.tsv.gz"),
            known_bad=("AudioWAV/1076_MTI_SAD_XX.wav has no signal",),
            notes=(
                "GitHub's LFS budget for this repository ran out in 2025; if downloads fail, "
                "pass --url with a mirror (files must sit at URL/AudioWAV/<name>.wav); "
                "every file is still checked against its sha256",
            ),
        ),
        CorpusInfo(
            name="tess",
            short=("CC BY-NC-ND 4.0", "LOSO 2 only"),
            title="TESS (Toronto emotional speech set)",
            language="en",
            licence="CC BY-NC-ND 4.0 (non-commercial, no derivatives)",
            accept=True,
            access="download",
            utterances=2800,
            speakers=2,
            classes="7",
            size="1.6 h (bytes not published)",
            protocol="2 speakers only: leave-one-speaker-out (2 folds) is the only "
            "speaker-independent split",
            where="https://borealisdata.ca/dataset.xhtml?persistentId=doi:10.5683/SP2/E8H2MF",
            tree="OAF_angry/OAF_back_angry.wav ... YAF_sad/ (2,800 files)",
            files=FileList(
                "dataverse", "https://borealisdata.ca", dataset="doi:10.5683/SP2/E8H2MF"
            ),
            notes=("each file is checked against the md5 the Dataverse listing publishes",),
        ),
        CorpusInfo(
            name="shemo",
            short=("academic use", "LOSO 87"),
            title="ShEMO (Sharif emotional speech)",
            language="fa",
            licence="free for academic purposes (no licence text published)",
            accept=True,
            access="download",
            utterances=None,
            speakers=87,
            classes="6",
            size="871 MB (2 zips)",
            protocol="leave-one-speaker-out (87)",
            where="https://github.com/pariajm/sharif-emotional-speech-dataset",
            tree="female/F01A01.wav ...  male/M01N01.wav ...",
            archives=(
                Archive(
                    "https://media.githubusercontent.com/media/mansourehk/ShEMO/master/female.zip",
                    "female.zip",
                    size=374_368_830,
                    sha256="663d8d7dceb44adbbf87d84be3a080fb691d169fbd972f6941e6302bc39f71e6",
                ),
                Archive(
                    "https://media.githubusercontent.com/media/mansourehk/ShEMO/master/male.zip",
                    "male.zip",
                    size=496_606_401,
                    sha256="747670d0d918e59d5e5020cf66610242890b093d42968c467c4f02eb5e6a6b1a",
                ),
            ),
            notes=(
                "shemo.json lists 3,000 clips; copies with fewer files exist (EmoBox found 2,838)",
            ),
        ),
        CorpusInfo(
            name="meld",
            short=("GPL-3.0", "official"),
            title="MELD (Friends dialogue)",
            language="en",
            licence="GPL-3.0",
            accept=False,
            access="download",
            utterances=13706,  # 13,708 CSV rows less the two known-bad clips
            speakers=304,
            classes="7",
            size="10.9 GB tar.gz (mp4 video)",
            protocol="official train / dev / test (9,989 / 1,109 / 2,610 rows)",
            where="https://github.com/declare-lab/MELD",
            tree="MELD.Raw/{train,dev,test}_sent_emo.csv\nMELD.Raw/train_splits/dia0_utt0.mp4\n"
            "MELD.Raw/dev_splits_complete/  MELD.Raw/output_repeated_splits_test/",
            archives=(
                Archive(
                    "https://huggingface.co/datasets/declare-lab/MELD/resolve/main/MELD.Raw.tar.gz",
                    "MELD.Raw.tar.gz",
                    size=10_878_146_150,
                    sha256="a56b4407d574195cbce470d86f9c9d72fcfea59b0e34502ecd4babee4a5c613e",
                    inner=("train.tar.gz", "dev.tar.gz", "test.tar.gz"),
                ),
            ),
            official_split=("train", "dev", "test"),
            known_bad=(
                "train dia125_utt3 (corrupt)",
                "dev dia110_utt7 (missing)",
                "test dia220_utt0 and dia38_utt4 are mis-cut (minutes long)",
            ),
        ),
        CorpusInfo(
            name="msp-podcast",
            short=("academic EULA", "official"),
            title="MSP-Podcast 1.11 / 1.12",
            language="en",
            licence="academic EULA / commercial licence (UTD MSP lab)",
            accept=True,
            access="manual",
            utterances=None,
            speakers=None,
            classes="8 (A S H U F D C N; X and O dropped) + arousal/valence/dominance",
            size="237 h (1.11) / 324 h (1.12)",
            protocol="official Split_Set: Train / Development / Test1 / Test2",
            where="http://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html (EULA)",
            tree="Audios/MSP-PODCAST_0001_0008.wav ...\nLabels/labels_consensus.csv",
            official_split=("train", "development", "test1", "test2"),
        ),
        CorpusInfo(
            name="esd",
            short=("research form", "official"),
            title="ESD (Emotional Speech Dataset)",
            language="zh + en",
            licence="research only; licence form e-mailed to the authors",
            accept=True,
            access="manual",
            utterances=35000,
            speakers=20,
            classes="5",
            size="≈29 h",
            protocol="official train / evaluation / test sub-folders",
            where="https://github.com/HLTSingapore/Emotional-Speech-Data (licence form)",
            tree="Emotion Speech Dataset/0001/Angry/{train,evaluation,test}/0001_000001.wav "
            "... 0020/",
            official_split=("train", "evaluation", "test"),
        ),
        CorpusInfo(
            name="savee",
            short=("registration", "LOSO 4"),
            title="SAVEE",
            language="en-GB",
            licence="free for research; registration at the University of Surrey",
            accept=True,
            access="manual",
            utterances=480,
            speakers=4,
            classes="7",
            size="≈0.5 h",
            protocol="leave-one-speaker-out (4)",
            where="the SAVEE page of the University of Surrey (registration)",
            tree="AudioData/{DC,JE,JK,KL}/a01.wav ... (or the flat ALL/DC_a01.wav copy)",
        ),
        CorpusInfo(
            name="emovo",
            short=("not published", "LOSO 6"),
            title="EMOVO",
            language="it",
            licence="not published",
            accept=True,
            access="manual",
            utterances=588,
            speakers=6,
            classes="7",
            size="≈335 MB",
            protocol="leave-one-speaker-out (6)",
            where="http://voice.fub.it/activities/corpora/emovo/index.html",
            tree="EMOVO/{f1,f2,f3,m1,m2,m3}/dis-f1-b1.wav ...",
        ),
        CorpusInfo(
            name="casia",
            short=("not published", "LOSO 4"),
            title="CASIA (public 1,200-clip subset)",
            language="zh",
            licence="not published",
            accept=True,
            access="manual",
            utterances=1200,
            speakers=4,
            classes="6",
            size="≈0.6 h",
            protocol="leave-one-speaker-out (4)",
            where="no official download found",
            tree="{liuchanhg,wangzhe,zhaoquanyin,zhaozuoxiang}/{angry,fear,happy,neutral,sad,"
            "surprise}/201.wav ...",
        ),
        CorpusInfo(
            name="jl",
            short=("CC0 (or ODC-By)", "LOSO 4"),
            title="JL-Corpus",
            language="en-NZ",
            licence="CC0 1.0 per SER-datasets (another listing says ODC-By)",
            accept=False,
            access="manual",
            utterances=2400,
            speakers=4,
            classes="10 (5 primary + 5 secondary)",
            size="≈1.4 h",
            protocol="leave-one-speaker-out (4)",
            where="https://www.kaggle.com/datasets/tli725/jl-corpus (Kaggle login)",
            tree="Raw JL corpus (unchecked and unannotated)/JL(wav+txt)/female1_angry_1a_1.wav ...",
        ),
    )
}


def corpus_info(name: str) -> CorpusInfo:
    """The catalogue entry of `name` (a `--kind`), or CorpusError naming the known ones."""
    from emoknn.errors import CorpusError

    if name not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return CORPORA[name]
