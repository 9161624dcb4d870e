"""Bad input anywhere gets one clear line before any work: CLI options, Python API inputs,
rich output of user text, silence, encoders that cannot be found."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emoknn import cli
from emoknn.audio import load_audio, prepare_samples
from emoknn.checks import check_choice, check_device, check_int, check_number
from emoknn.cli import common as cli_common
from emoknn.config import make_config
from emoknn.corpora import (
    Utterance,
    generate_synthetic_corpus,
    load_corpus,
    load_iemocap,
    load_manifest,
    load_synthetic,
)
from emoknn.errors import AudioError, ConfigError, CorpusError, EmoknnError, FoldError
from emoknn.folds import select_folds, speaker_folds
from emoknn.predict import EmotionRecognizer

NO_GPU = not torch.cuda.is_available()


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "TrainConfig(" not in err  # never a dump of the whole config


def _option_id(value) -> str:
    return " ".join(value) if isinstance(value, list) else "msg"


# ---------------------------------------------------------------------------------------------
# Every option of every command, checked before any work (nothing is written).


@pytest.fixture(scope="module")
def one_class_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oneclass")
    rows = ["path,label,speaker"]
    for number, speaker in enumerate(("a", "b", "c")):
        for index in range(2):
            path = root / f"{speaker}{index}.wav"  # distinct audio: copies are refused first
            sf.write(path, np.random.default_rng(10 * number + index).normal(0, 0.1, 8000), 16000)
            rows.append(f"{path.name},angry,{speaker}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


TRAIN_CASES = [
    (["--workers", "-1"], "--workers must be an integer ≥ 0, got -1"),
    (["--precision", "foo"], "--precision must be one of auto"),
    (["--criterion", "foo"], "--criterion must be one of ua, wa; got 'foo'"),
    (["--epochs", "0"], "--epochs must be an integer ≥ 1"),
    (["--batch-size", "1"], "--batch-size must be an integer ≥ 2"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lambda", "2"], "--lambda must be a finite number in [0, 1]"),
    (["--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--seed", "-1"], "--seed must be an integer in [0, 4294967295]"),
    (["--augment", "foo"], "--augment must be one of"),
    (["--optimizer", "foo"], "--optimizer must be one of sgd, adamw"),
    (["--monitor", "foo"], "--monitor must be one of val_loss"),
    (["--max-seconds", "0"], "--max-seconds must be a finite number > 0.025"),
    (["--devices", "0"], "--devices must be an integer ≥ 1"),
    (["--num-nodes", "0"], "--num-nodes must be an integer ≥ 1"),
    (["--early-stopping", "-1"], "--early-stopping must be an integer ≥ 0"),
    (["--preset", "huge"], "--preset must be one of paper, tiny"),
    (["--kind", "foo"], "--kind must be one of auto"),
    (["--scheme", "foo"], "--scheme must be one of speaker, session"),
    (["--fold", "3-1"], "fold range '3-1' runs backwards"),
    (["--fold", ","], "names no fold"),
    (["--fold", "99"], "fold index 99 out of range"),
    (["--rir-dir", "/nonexistent/rirs"], "--rir-dir /nonexistent/rirs: folder not found"),
    (["--encoder", "./no/such/encoder"], "the encoder './no/such/encoder': folder not found"),
]
if not {"MASTER_ADDR", "NODE_RANK", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"} & set(os.environ):
    TRAIN_CASES.append((["--num-nodes", "2"], "--num-nodes 2 needs a multi-node launch"))
if importlib.util.find_spec("tensorboard") is None:
    TRAIN_CASES.append((["--tensorboard"], "--tensorboard needs TensorBoard"))
if NO_GPU:
    TRAIN_CASES += [
        (["--accelerator", "gpu"], "--accelerator 'gpu': no CUDA GPU is available"),
        (["--precision", "16-mixed"], "precision '16-mixed' needs a CUDA GPU"),
    ]


@pytest.mark.parametrize(("options", "message"), TRAIN_CASES, ids=_option_id)
def test_train_options_are_checked_before_any_work(options, message, small_synthetic_corpus,
                                                    tmp_path, capsys):  # fmt: skip
    out = tmp_path / "run"
    argv = ["train", "--corpus", str(small_synthetic_corpus), "--preset", "tiny", "--out",
            str(out), *options]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, message)
    assert not out.exists()


CROSSVAL_CASES = [
    (["--folds", "3-1"], "runs backwards"),
    (["--tables", "foo"], "--tables 'foo': unknown table(s) ['foo']"),
    (["--tables", ","], "--tables must name one or more of main, augment, lambda"),
    (["--criterion", "foo"], "--criterion must be one of ua, wa"),
    (["--workers", "-1"], "--workers must be an integer ≥ 0"),
    (["--precision", "foo"], "--precision must be one of"),
    (["--scheme", "x"], "--scheme must be one of"),
]


@pytest.mark.parametrize(("options", "message"), CROSSVAL_CASES, ids=_option_id)
def test_crossval_options_are_checked_before_anything_is_written(
    options, message, small_synthetic_corpus, tmp_path, capsys
):
    out = tmp_path / "cv"
    argv = ["crossval", "--corpus", str(small_synthetic_corpus), "--preset", "tiny", "--out",
            str(out), *options]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, message)
    assert not out.exists()


def test_one_class_corpus_is_refused_before_training(one_class_corpus, tmp_path, capsys):
    for command in ("train", "crossval"):
        out = tmp_path / command
        argv = [command, "--corpus", str(one_class_corpus), "--preset", "tiny", "--out", str(out)]
        code, _, err = run_main(argv, capsys)
        assert_one_line_error(code, err, "1 class (angry)", "at least 2 labels")
        assert not out.exists()


PREDICT_CASES = [
    (["--batch-size", "0"], "--batch-size must be an integer ≥ 1, got 0"),
    (["--batch-size", "-1"], "--batch-size must be an integer ≥ 1, got -1"),
    (["--format", "xml"], "--format must be one of table, json, csv"),
    (["--segmentation", "foo"], "--segmentation must be one of window, vad"),
    (["--window", "0.1"], "--window must be a finite number in [0.5, 60]"),
    (["--hop", "0"], "--hop must be a finite number > 0"),
    (["--window", "2", "--hop", "3"], "--hop must be a finite number in (0, 2]"),
    (["--precision", "fp8"], "--precision must be one of fp32, bf16"),
    (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or mps"),
]
if NO_GPU:
    PREDICT_CASES.append((["--device", "cuda"], "--device 'cuda': no CUDA GPU is available"))


@pytest.mark.parametrize(("options", "message"), PREDICT_CASES, ids=_option_id)
def test_predict_options(options, message, trained_run, small_synthetic_corpus, capsys):
    clip = str(load_synthetic(small_synthetic_corpus)[0].path)
    code, out, err = run_main(["predict", clip, "--model", str(trained_run), *options], capsys)
    assert_one_line_error(code, err, message)
    assert out == ""


def test_device_cuda_is_not_blamed_on_the_checkpoint(trained_run):
    if not NO_GPU:
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError) as error:
        EmotionRecognizer.load(trained_run, device="cuda")
    assert "no CUDA GPU is available" in str(error.value)
    assert "checkpoint" not in str(error.value)


def test_serve_options(trained_run, capsys):
    base = ["serve", "--model", str(trained_run)]
    cases = [
        (["--port", "99999"], "--port must be an integer in [1, 65535], got 99999"),
        (["--port", "0"], "--port must be an integer in [1, 65535]"),
        (["--max-upload-mb", "-1"], "--max-upload-mb must be a finite number > 0, got -1.0"),
        (["--max-seconds", "0"], "--max-seconds must be a finite number > 0"),
        (["--max-segments", "0"], "--max-segments must be an integer ≥ 1"),
        (["--precision", "x"], "--precision must be one of fp32, bf16"),
        (["--host", "no.such.host.invalid"], "--host 'no.such.host.invalid'"),
    ]
    for options, message in cases:
        assert_one_line_error(*run_main([*base, *options], capsys)[::2], message)
    with SocketInUse() as port:  # a busy port fails before the model loads
        code, _, err = run_main([*base, "--port", str(port)], capsys)
        assert_one_line_error(code, err, f"cannot listen on 127.0.0.1:{port}")


class SocketInUse:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_export_out_must_not_be_a_run_or_foreign_folder(trained_run, tmp_path, capsys):
    base = ["export", "--model", str(trained_run)]
    code, _, err = run_main([*base, "--out", str(trained_run)], capsys)
    assert_one_line_error(code, err, "is the run folder itself")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"meow")
    code, _, err = run_main([*base, "--out", str(foreign)], capsys)
    assert_one_line_error(code, err, "holds no earlier export")
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]
    code, _, err = run_main([*base, "--format", "tflite"], capsys)
    assert_one_line_error(code, err, "--format must be one of onnx")


def test_other_commands_options(trained_run, small_synthetic_corpus, tmp_path, capsys):
    clip = str(load_synthetic(small_synthetic_corpus)[0].path)
    (tmp_path / "afile").write_text("x")
    cases = [
        (["datastore", "build", str(trained_run), "--criterion", "x"], "--criterion must be"),
        (["datastore", "build", str(trained_run), "--index", "ivf"], "--index must be one of"),
        (["datastore", "build", str(tmp_path / "none")], "RUN " + str(tmp_path / "none")),
        (["datastore", "add", str(trained_run)], "give audio files with a non-empty --label"),
        (["datastore", "add", str(trained_run), clip, "--label", " "], "non-empty --label"),
        (["datastore", "add", str(trained_run), str(tmp_path / "nope.wav"), "--label", "sad"],
         "nope.wav: file not found"),
        (["datastore", "add", str(trained_run), clip, "--label", "sad", "--manifest", "m.csv"],
         "not both"),
        (["corpus", "synth", str(tmp_path / "s"), "--sessions", "0"], "--sessions must be"),
        (["corpus", "synth", str(tmp_path / "s"), "--per-class", "0"], "--per-class must be"),
        (["corpus", "synth", str(tmp_path / "s"), "--seed", "-1"], "--seed must be"),
        (["corpus", "synth", str(tmp_path / "s"), "--min-seconds", "5", "--max-seconds", "1"],
         "--max-seconds must be a finite number ≥ 5"),
        (["corpus", "summarize", str(small_synthetic_corpus), "--kind", "x"], "--kind must be"),
        (["augment", "preview", clip, str(tmp_path / "p"), "--seed", "-3"], "--seed must be"),
        (["augment", "preview", clip, str(tmp_path / "p"), "--rir-dir", "/no/rirs"],
         "--rir-dir /no/rirs: folder not found"),
        (["augment", "preview", clip, str(tmp_path / "afile")], "exists and is not a folder"),
        (["report", str(tmp_path / "missing")], "folder not found"),
        (["demo", "--epochs", "0", "--out", str(tmp_path / "d")], "--epochs must be"),
        (["demo", "--out", str(tmp_path / "afile")], "exists and is not a folder"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = run_main(argv, capsys)
        assert_one_line_error(code, err, message)
    assert not (tmp_path / "s").exists() and not (tmp_path / "p").exists()
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------
# corpus synth over an existing corpus


def test_corpus_synth_never_overwrites_or_leaves_stale_files(tmp_path, capsys):
    out = tmp_path / "syn"
    argv = ["corpus", "synth", str(out), "--sessions", "2", "--per-class", "1"]
    assert run_main(argv, capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run_main(
        ["corpus", "synth", str(out), "--sessions", "1", "--per-class", "2", "--seed", "3"], capsys
    )
    assert_one_line_error(code, err, "folder exists and is not empty (a synthetic corpus)")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".*partial"))  # the staging folder is gone
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(generate_synthetic_corpus(empty, num_sessions=1, utterances_per_class=1)) == 8


# ---------------------------------------------------------------------------------------------
# Rich never interprets user text


@pytest.fixture(scope="module")
def bracket_files(tmp_path_factory, small_synthetic_corpus, trained_run):
    import shutil

    root = tmp_path_factory.mktemp("brackets")
    folder = root / "take["
    folder.mkdir()
    source = load_synthetic(small_synthetic_corpus)[0].path
    shutil.copy(source, folder / "[bold]x.wav")
    shutil.copy(source, folder / ":smile: x] é.wav")  # its path holds "[/:smile: x]"
    model = root / "model [red]v1["
    shutil.copytree(trained_run, model)
    return folder, model


def test_names_with_brackets_print_as_they_are(bracket_files, capsys):
    folder, model = bracket_files
    code, out, err = run_main(["predict", str(folder), "--model", str(model)], capsys)
    assert code == 0, err
    assert "[bold]x.wav" in out and ":smile: x] é.wav" in out and "😄" not in out
    assert "model [red]v1[" in out  # the table title
    code, _, err = run_main(["predict", str(folder / "gone[/x].wav"), "--model", str(model)],
                            capsys)  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert "skipped: " + str(folder / "gone[/x].wav") + ": file not found" in err
    code, _, err = run_main(["predict", str(folder), "--model", str(folder / "[/red]")], capsys)
    assert_one_line_error(code, err, "[/red]")


def test_corpus_table_prints_bracketed_speakers(tmp_path, capsys):
    rows = ["path,label,speaker"]
    for speaker in ("[red]spk", "b[", "c:smile:"):
        for label in ("angry", "sad"):
            path = tmp_path / f"{label}-{len(rows)}.wav"
            sf.write(path, np.zeros(4000), 16000)
            rows.append(f"{path.name},{label},{speaker}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run_main(["corpus", "summarize", str(tmp_path / "manifest.csv")], capsys)
    assert code == 0, err
    assert "[red]spk" in out and "b[" in out and "c:smile:" in out


# ---------------------------------------------------------------------------------------------
# The Python API says what it expected


@pytest.fixture(scope="module")
def recognizer(trained_run):
    return EmotionRecognizer.load(trained_run, device="cpu")


def tone(seconds: float = 0.8, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ((tone(), 0), "input_rate must be a positive whole number of Hz, got 0"),
        ((tone(), -16000), "input_rate must be a positive whole number of Hz"),
        ((tone(), 16000.5), "input_rate must be a positive whole number of Hz"),
        ((tone(), True), "input_rate must be a positive whole number of Hz"),
        (np.float32(0.5), "numpy scalar"),
        (np.array(0.5), "got a scalar"),
        (tone().astype(np.int64), "dtype int64 are not audio"),
        (tone() > 0, "dtype bool are not audio"),
        (np.stack([tone(), tone()]), "more channels than samples"),
        (np.zeros((2, 3, 4)), "expected samples of shape (T,) or (T, channels)"),
        ([0.1, 0.2, 0.3], "got float"),
        (42, "got int"),
        (None, "got NoneType"),
        ({"audio": tone()}, "got dict"),
    ],
    ids=lambda x: str(x)[:30],
)
def test_predict_refuses_what_is_not_audio(recognizer, bad, message):
    with pytest.raises(AudioError, match=None) as error:
        recognizer.predict(bad)
    assert message in str(error.value)


def test_predict_accepts_pcm_and_pairs_and_tuples_of_paths(recognizer, tmp_path):
    clip = tone()
    reference = recognizer.predict(clip)[0].probabilities
    pcm = np.round(clip * 32767).astype(np.int16)
    assert recognizer.predict(pcm)[0].probabilities == pytest.approx(reference, abs=1e-3)
    assert recognizer.predict((clip, 16000))[0].probabilities == pytest.approx(reference)
    paths = []
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, clip, 16000)
        paths.append(str(tmp_path / name))
    results = recognizer.predict(tuple(paths))  # a tuple of paths is two inputs, not a pair
    assert [r.source for r in results] == paths
    with pytest.raises(AudioError, match=r"missing\.wav: file not found"):
        recognizer.predict((str(tmp_path / "missing.wav"), paths[0]))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer ≥ 1, got 0"),
        ({"batch_size": -1}, "batch_size must be an integer ≥ 1, got -1"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"window_seconds": 0}, "window_seconds must be a finite number in [0.5, 60], got 0"),
        ({"hop_seconds": 0}, "hop_seconds must be a finite number in (0,"),
        ({"hop_seconds": "1"}, "hop_seconds must be a finite number"),
        ({"segmentation": "frames"}, "segmentation must be one of window, vad"),
        ({"max_segments": 0}, "max_segments must be an integer ≥ 1"),
    ],
)
def test_predict_settings_are_checked(recognizer, settings, message):
    with pytest.raises(ConfigError) as error:
        recognizer.predict(tone(), **settings)
    assert message in str(error.value)
    with pytest.raises(ConfigError):
        list(recognizer.predict_files(["x.wav"], **settings))


def test_model_must_be_a_path():
    from emoknn.predict import load_recognizer

    for bad in (None, 123, ""):
        with pytest.raises(ConfigError, match="model must be the path of a model folder"):
            EmotionRecognizer.load(bad)
        with pytest.raises(ConfigError, match="model must be the path of a model folder"):
            load_recognizer(bad)


def test_score_checks_batch_size(recognizer):
    with pytest.raises(ConfigError, match="batch_size must be an integer ≥ 1"):
        recognizer.score([tone()], batch_size=0)


def test_audio_entry_points_check_their_arguments(tmp_path):
    with pytest.raises(AudioError, match="expected an audio file path, got NoneType"):
        load_audio(None)
    sf.write(tmp_path / "a.wav", tone(), 16000)
    with pytest.raises(AudioError, match="sample_rate must be a positive whole number"):
        load_audio(tmp_path / "a.wav", sample_rate=0)
    with pytest.raises(AudioError, match="input_rate must be"):
        prepare_samples(tone(), 0)
    pcm8 = (np.round(tone() * 127) + 128).astype(np.uint8)  # 8-bit WAV is offset binary
    assert prepare_samples(pcm8, 16000) == pytest.approx(tone(), abs=0.01)


def test_corpus_and_fold_entry_points_check_their_arguments(small_synthetic_corpus):
    for loader in (load_corpus, load_iemocap, load_manifest, load_synthetic):
        with pytest.raises(CorpusError, match="must be a path, got None"):
            loader(None)
    with pytest.raises(CorpusError, match="label must be a non-empty string"):
        Utterance("u1", Path("a.wav"), "", "spk")
    assert Utterance("u1", "a.wav", "sad", "spk").path == Path("a.wav")
    with pytest.raises(FoldError, match="load the corpus first"):
        speaker_folds(str(small_synthetic_corpus))
    with pytest.raises(FoldError, match="expected Utterance items"):
        speaker_folds([{"speaker": "a"}])
    folds = speaker_folds(load_synthetic(small_synthetic_corpus))
    for selection, message in (("3-1", "runs backwards"), (",", "names no fold"),
                               ("-1", "neither a fold index")):  # fmt: skip
        with pytest.raises(FoldError, match=message):
            select_folds(folds, selection)


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError) as error:
        make_config("tiny", num_workers=-1)
    assert str(error.value) == "num_workers must be an integer ≥ 0, got -1"
    assert error.value.renamed("--workers").args[0] == "--workers must be an integer ≥ 0, got -1"


def test_checks():
    assert check_int(3, "n", 1) == 3
    for bad in (0, True, 1.5, "2", None):
        with pytest.raises(ConfigError):
            check_int(bad, "n", 1)
    assert check_number(0.5, "x", 0.0, 1.0) == 0.5
    for bad in (float("nan"), float("inf"), -0.1, 1.1, "0.5", None):
        with pytest.raises(ConfigError):
            check_number(bad, "x", 0.0, 1.0)
    with pytest.raises(ConfigError, match=r"x must be a finite number > 0, got 0"):
        check_number(0, "x", 0.0, strict_minimum=True)
    assert check_choice("a", "c", ("a", "b")) == "a"
    with pytest.raises(ConfigError, match="c must be one of a, b; got 'z'"):
        check_choice("z", "c", ("a", "b"))
    assert check_device(None) is None and check_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="must be cpu, cuda, cuda:N or mps"):
        check_device("gpu0")


# ---------------------------------------------------------------------------------------------
# Silence or a constant signal: "no speech", not a confident emotion


@pytest.mark.parametrize(
    "signal",
    [np.zeros(16000), np.full(16000, 0.5), np.random.default_rng(0).normal(0, 1e-4, 16000)],
    ids=["zeros", "constant", "faint-noise"],
)
def test_silence_is_flagged_no_speech(recognizer, signal):
    result = recognizer.predict(signal.astype(np.float32))[0]
    assert result.no_speech is True and result.level_dbfs < -45
    assert json.loads(json.dumps(result.to_dict()))["no_speech"] is True  # valid JSON, no -inf


def test_speech_level_audio_is_not_flagged(recognizer, small_synthetic_corpus):
    result = recognizer.predict(load_synthetic(small_synthetic_corpus)[0].path)[0]
    assert result.no_speech is False and result.level_dbfs > -45


def test_silent_windows_are_flagged_and_left_out_of_the_whole(recognizer):
    """A long input with silent stretches: the whole is the mean over its speech windows."""
    voiced = tone(1.0)
    audio = np.concatenate([voiced, np.zeros(16000, np.float32), voiced, np.zeros(16000)])
    result = recognizer.predict(audio.astype(np.float32), window_seconds=1.0)[0]
    assert [s.no_speech for s in result.segments] == [False, True, False, True]
    speech = [s.probabilities for s in result.segments if not s.no_speech]
    expected = {k: np.mean([p[k] for p in speech]) for k in speech[0]}
    assert result.probabilities == pytest.approx(expected, abs=1e-6)
    assert result.no_speech is False


def test_cli_says_no_speech_in_every_format(trained_run, tmp_path, capsys):
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    base = ["predict", str(tmp_path / "silence.wav"), "--model", str(trained_run)]
    code, out, err = run_main(base, capsys)
    assert code == 0 and "no speech" in out and "say nothing about emotion" in err
    code, out, _ = run_main([*base, "--format", "json"], capsys)
    assert json.loads(out)[0]["no_speech"] is True
    code, out, _ = run_main([*base, "--format", "csv"], capsys)
    header, row = out.splitlines()[:2]
    assert header.split(",")[-1] == "no_speech" and row.split(",")[-1] == "1"


# ---------------------------------------------------------------------------------------------
# Encoders: a missing folder is "folder not found"; an unreachable Hub fails without retries


def test_missing_local_encoder_is_folder_not_found(tmp_path):
    from emoknn.sources import pretrained_kwargs

    for name in ("./no/such", str(tmp_path / "nothing"), "~/nowhere-emoknn", "bad name!"):
        with pytest.raises(ConfigError, match="folder not found"):
            pretrained_kwargs(name)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"the folder has no config\.json"):
        pretrained_kwargs(str(tmp_path / "empty"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        pretrained_kwargs(str(tmp_path / "file"))


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """The Hub endpoint is a closed local port, and the HF cache an empty folder."""
    from huggingface_hub import constants

    from emoknn import sources

    with SocketInUse() as port:
        pass  # the port is free again and nothing listens on it: connections are refused
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    sources.hub_unreachable.cache_clear()
    yield tmp_path / "hf-cache"
    sources.hub_unreachable.cache_clear()


def test_unreachable_hub_fails_at_once_with_the_offline_hint(unreachable_hub, monkeypatch):
    import transformers

    from emoknn.model import ModelConfig, load_encoder

    def no_download(*args, **kwargs):
        raise AssertionError("from_pretrained must not be reached (it would retry for ~77 s)")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_download)
    with pytest.raises(ConfigError) as error:
        load_encoder(ModelConfig(encoder="facebook/wav2vec2-base"))
    message = str(error.value)
    assert "Hub is unreachable" in message and "HF_HUB_OFFLINE=1" in message
    assert "save_pretrained" in message and "\n" not in message


def test_encoder_in_the_hf_cache_loads_without_the_hub(unreachable_hub, tmp_path):
    """A filled cache (as huggingface_hub lays it out) is used at once when the Hub is down."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from emoknn.model import ModelConfig, load_encoder, tiny_encoder_config

    config = dict(tiny_encoder_config())
    config.pop("model_type")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = unreachable_hub / "models--someone--tiny-w2v"
    Wav2Vec2Model(Wav2Vec2Config(**config)).save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    encoder = load_encoder(ModelConfig(encoder="someone/tiny-w2v"))
    assert encoder.config.hidden_size == 64
    with pytest.raises(EmoknnError, match="not in the Hugging Face cache"):
        load_encoder(ModelConfig(encoder="someone/other"))


def test_consoles_print_markup_literally(capsys):
    """Every print of the CLI goes through these consoles: tags and emoji codes stay text."""
    cli_common.console.print("[bold]x.wav :smile: take[")
    cli_common.error_console.print("[/red] gone")
    captured = capsys.readouterr()
    assert captured.out.strip() == "[bold]x.wav :smile: take["
    assert captured.err.strip() == "[/red] gone"


def test_numeric_api_errors_are_emoknn_errors():
    """Shape and range errors of the losses, kNN and batching are EmoknnError (and ValueError)."""
    from emoknn.data import BucketBatchSampler
    from emoknn.knn import interpolate, knn_probs
    from emoknn.losses import supcon_loss

    bad_calls = [
        lambda: knn_probs(np.ones((2, 3)), np.zeros((2, 2), int), 2, 1.0),
        lambda: knn_probs(np.ones((2, 3)), np.zeros((2, 3), int), 2, 0.0),
        lambda: interpolate(np.ones((1, 2)) / 2, np.ones((1, 2)) / 2, 1.5),
        lambda: supcon_loss(torch.ones(4, 8), torch.tensor([0, 1, 0])),
        lambda: supcon_loss(torch.ones(4, 8), torch.tensor([0, 1, 0, 1]), temperature=0),
        lambda: BucketBatchSampler([1, 2, 3], 0),
    ]
    for call in bad_calls:
        with pytest.raises(ConfigError):
            call()
