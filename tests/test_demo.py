from __future__ import annotations

import csv

from emoknn.corpora import load_synthetic
from emoknn.demo import choose_encoder, try_it, verdict


def _summary(best_ua: float, baseline_ua: float, probe_ua: float | None = None) -> dict:
    summary = [
        {"variant": "CE", "training": "ce", "ua_mean": best_ua - 0.05},
        {"variant": "CE+SCL + kNN", "training": "scl", "ua_mean": best_ua},
        {"variant": "Baseline (features + LR)", "training": "baseline", "ua_mean": baseline_ua},
    ]
    if probe_ua is not None:
        summary.append({"variant": "Encoder probe (LR)", "training": "probe", "ua_mean": probe_ua})
    return {"summary": summary}


def _tested(results: dict, reference: str, p_value: float, folds: int = 10) -> dict:
    results.setdefault("comparisons", []).append(
        {"b": reference, "folds": list(range(folds)), "ua": {"p_value": p_value}})  # fmt: skip
    return results


def test_verdict_says_in_plain_words_where_learned_variants_stand():
    above = verdict(_summary(0.81, 0.73), "openai/whisper-base")
    assert above.startswith("The learned variants (best: CE+SCL + kNN UA 81.0 %) reach the "
                            "classical baseline (Baseline (features + LR) UA 73.0 %; too few "
                            "folds")  # fmt: skip
    below = verdict(_summary(0.55, 0.73), "tiny")
    assert "stay below the classical baseline" in below
    assert "random weights" in below
    assert "random weights" not in verdict(_summary(0.55, 0.73), "openai/whisper-base")
    tested = _tested(_summary(0.71, 0.76), "Baseline (features + LR)", 0.09)
    assert "UA 76.0 %; within fold-to-fold noise, p = 0.09)" in verdict(tested, "tiny")
    tested["comparisons"][0]["ua"]["p_value"] = 0.002
    assert "UA 76.0 %; beyond fold-to-fold noise, p = 0.002)" in verdict(tested, "tiny")


def test_verdict_weighs_the_heads_against_the_probe_and_the_baseline():
    results = _summary(0.78, 0.72, probe_ua=0.80)
    _tested(results, "Encoder probe (LR)", 0.01)
    _tested(results, "Baseline (features + LR)", 0.004)
    sentence = verdict(results, "openai/whisper-base")
    assert sentence == (
        "The learned variants (best: CE+SCL + kNN UA 78.0 %) stay below the encoder probe "
        "(Encoder probe (LR) UA 80.0 %; beyond fold-to-fold noise, p = 0.01) and beat the "
        "classical baseline (Baseline (features + LR) UA 72.0 %; beyond fold-to-fold noise, "
        "p = 0.004) on this corpus."
    )
    results["comparisons"][0]["ua"]["p_value"] = 0.3
    assert "within fold-to-fold noise, p = 0.30) and beat" in verdict(results, "tiny")
    assert "random weights" in verdict(results, "tiny")  # below the probe
    assert verdict({"summary": [_summary(0.7, 0.7)["summary"][0]]}, "tiny").startswith("No probe")


def test_encoder_choice_falls_back_to_tiny_with_the_reason(tmp_path):
    assert choose_encoder("tiny").encoder == "tiny"
    missing = choose_encoder(str(tmp_path / "no-such-encoder"))
    assert missing.encoder == "tiny" and "\n" not in missing.line
    assert "could not be loaded" in missing.line and "no-such-encoder" in missing.line


def test_encoder_choice_takes_a_loadable_local_folder(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from emoknn.model import tiny_encoder_config

    folder = tmp_path / "encoder"
    Wav2Vec2Model(Wav2Vec2Config(**tiny_encoder_config())).save_pretrained(folder)
    choice = choose_encoder(str(folder))
    assert choice.encoder == str(folder) and "pretrained" in choice.line


def test_try_it_names_a_model_and_a_clip_of_its_test_speaker(small_synthetic_corpus, tmp_path):
    utterances = load_synthetic(small_synthetic_corpus)
    run = tmp_path / "scl" / "fold00-Syn01F"
    run.mkdir(parents=True)
    test = [u for u in utterances if u.speaker == "Syn01F"]
    with (run / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "speaker", "label", "model"])
        writer.writerow([test[0].id, test[0].speaker, test[0].label, test[0].label])
    results = {"fold_dirs": {"ce/fold00-Syn01F": "x", "scl/fold00-Syn01F": str(run)}}
    lines = try_it(tmp_path, results, small_synthetic_corpus)
    assert str(run) in lines[0] and "Syn01F" in lines[0]
    assert lines[1] == f"  emoknn predict {test[0].path} --model {run}"
    assert lines[2] == f"  emoknn serve --model {run}"
