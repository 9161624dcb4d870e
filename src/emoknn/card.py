"""Model cards (`README.md`) generated from what a model folder's own files say.

`model_card(report)`: an adapted folder, from `adapt.json` (the same run): the source model and
its encoder, the clips, the label mapping, the protocol, per-fold and mean WA/UA of the model
alone, the kNN alone and the interpolation, the paired comparisons, the chosen k, α, T and the
licence field. `run_card(folder)`: a training run, from model.json, train_config.json, knn.json and
(for `crossval` folds) fold_result.json. Nothing is written by hand, so a card cannot describe
another model than its folder holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emoknn.publish import local_name, without_local_paths  # noqa: F401  (cards use them)

INFERENCE_NAMES = {
    "model": "model alone",
    "knn": "kNN alone (your clips)",
    "interpolated": "model + kNN (adapted)",
    "refit": "head refit (source + your clips)",
    "refit_knn": "head refit + kNN",
}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _dimensional_lines(dimensional: dict[str, Any] | None) -> list[str]:
    """A dimensional model's held-out CCC per attribute (pooled) and per-fold mean, if any."""
    if not dimensional:
        return []
    attributes = dimensional["attributes"]
    lines = ["| inference | " + " | ".join(f"{a} CCC" for a in attributes)
             + " | mean CCC | per-fold mean ± std |",
             "|---|" + "---:|" * (len(attributes) + 2)]  # fmt: skip
    for name, title in INFERENCE_NAMES.items():
        row = dimensional["summary"].get(name)
        if row is not None:
            cells = [f"{row['pooled'][a]:.3f}" for a in (*attributes, "mean")]
            lines.append(f"| {title} | " + " | ".join(cells)
                         + f" | {row['ccc_mean']:.3f} ± {row['ccc_std']:.3f} |")  # fmt: skip
    lines += [""]
    for c in dimensional["comparisons"]:
        interval = ("no interval" if c["ci_low"] is None else
                    f"95 % CI {c['ci_low']:+.3f} to {c['ci_high']:+.3f}")  # fmt: skip
        lines.append(f"- {c['name']} (mean CCC): {c['mean']:+.3f} per fold ({interval}, "
                     f"p = {c['p_value']:.2f}, {c['test']})")  # fmt: skip
    return [*lines, ""]


def model_card(report: dict[str, Any]) -> str:
    """Markdown with a Hugging Face front matter, from an `adapt.json` report."""
    source, data, protocol = report["source"], report["data"], report["protocol"]
    licence = report.get("licence") or "other"
    chosen = report["tuning"]["interpolated"]
    shown = {name: title for name, title in INFERENCE_NAMES.items() if name in report["summary"]}
    note = (["The model part knows none of these labels (every label is served by the kNN "
             "alone), so there is no model-alone or interpolated figure.", ""]
            if report.get("model_knows_no_label") else [])  # fmt: skip
    lines = [
        "---",
        f"license: {licence}",
        "library_name: emoknn",
        "pipeline_tag: audio-classification",
        "tags: [speech-emotion-recognition, knn, emoknn]",
        "---",
        "",
        f"# Emotion recognition adapted from `{local_name(source['name'])}`",
        "",
        *_remedy_lines(report),
        "",
        "| | |",
        "|---|---|",
        f"| source model | `{local_name(source['name'])}` ({source['kind']}) |",
        f"| encoder | `{local_name(source['encoder'])}` |",
        f"| labels | {', '.join(report['labels'])} |",
        f"| labels the model part predicts | {', '.join(report['model_labels']) or 'none'} |",
        f"| label map (model → these labels) | {_mapping(report['label_map'])} |",
        f"| adaptation clips | {data['clips']} from `{local_name(data['path'])}` "
        f"({_counts(data['per_label'])}) |",
        f"| datastore | {data['clips']} clips"
        + (
            f" + {report['original_entries']} of the source model's"
            if report["kept_original_datastore"]
            else ""
        )
        + (
            f" + {report['added_clips']} added later with `emoknn datastore add` (not in the "
            "held-out figures below)"
            if report.get("added_clips")
            else ""
        )
        + " |",
        f"| kNN settings | k = {chosen['k']}, α = {chosen['alpha']}, T = {chosen['temperature']} "
        f"(tuned for {protocol['criterion'].upper()}) |",
        f"| window | {report['max_seconds']:g} s |",
        f"| licence | {licence} |",
        "",
        "Labels the model part cannot predict are served by the kNN alone: with s the kNN's "
        "probability mass on them, p(y) = p_kNN(y) for those labels and "
        "α·p_kNN(y) + (1 − α)·(1 − s)·p_model(y) for the others.",
        "",
        "## Measured on held-out clips",
        "",
        _protocol_sentence(protocol, data),
        "",
        *note,
        "| inference | UA % (mean ± std over folds) | WA % (mean ± std) | UA % pooled | "
        "WA % pooled |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, title in shown.items():
        row = report["summary"][name]
        lines.append(
            f"| {title} | {_percent(row['ua_mean'])} ± {_percent(row['ua_std'])} | "
            f"{_percent(row['wa_mean'])} ± {_percent(row['wa_std'])} | "
            f"{_percent(row['pooled_ua'])} | {_percent(row['pooled_wa'])} |"
        )
    lines += ["", *[f"- {c['sentence']}" for c in report["comparisons"]], ""]
    lines += _dimensional_lines(report.get("dimensional"))
    lines += [f"Statistics: {protocol['statistics']}", "", "### Per fold", ""]
    speakers = protocol["grouping"] == "speaker"
    header = "| fold | " + ("held-out speakers | " if speakers else "") + "clips | "
    header += " | ".join(f"{title} UA / WA %" for title in shown.values()) + " |"
    lines += [header, "|" + "---|" * (2 + speakers + len(shown))]
    for record in report["per_fold"]:
        cells = [str(record["fold"])]
        if speakers:
            cells.append(", ".join(record["speakers"]))
        cells.append(str(record["clips"]))
        cells += [f"{_percent(record[n]['ua'])} / {_percent(record[n]['wa'])}"
                  for n in shown]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "emoknn predict clip.wav --model THIS_FOLDER",
        "emoknn serve --model THIS_FOLDER",
        "emoknn export --model THIS_FOLDER --quantize",
        "```",
        "",
        "```python",
        "from emoknn.predict import EmotionRecognizer",
        "",
        'recognizer = EmotionRecognizer.load("THIS_FOLDER")',
        'print(recognizer.predict("clip.wav")[0].label)',
        "```",
        "",
        "## Limitations",
        "",
        "The figures above hold for clips like the adaptation clips (same recording conditions, "
        "speakers, language and label definitions); on other audio, measure again. The fold "
        "figures come from few clips per fold, so single folds vary widely.",
        "",
    ]
    return "\n".join(lines)


def _remedy_lines(report: dict[str, Any]) -> list[str]:
    """What the folder ships (`adapt.json`'s `remedy`), and by how much it beat zero-shot."""
    remedy = report.get("remedy") or {"chosen": "knn", "asked": "knn"}
    chosen = remedy["chosen"]
    what = {
        "zero-shot": "the source model's weights, unchanged (its labels mapped onto yours), "
                     "used alone (α = 0: the datastore only shows neighbours)",
        "knn": "the source model's weights, unchanged, interpolated with a k-nearest-neighbour "
               "model over a datastore of labelled clips (`emoknn adapt`, no training): "
               "p = α·p_kNN + (1 − α)·p_model",
        "refit": "the source model's encoder with a new linear head refitted on the source "
                 "corpus's training clips and the labelled clips (`emoknn adapt`'s head refit), "
                 "used alone (α = 0: the datastore only shows neighbours)",
        "refit+knn": "the source model's encoder with a new linear head refitted on the source "
                     "corpus's training clips and the labelled clips, interpolated with a "
                     "k-nearest-neighbour model over the labelled clips: "
                     "p = α·p_kNN + (1 − α)·p_head",
    }[chosen]
    lines = [f"An emoknn model folder: {what}."]
    if remedy.get("candidates"):
        metric = remedy["criterion"].upper()
        how = ("the best held-out" if remedy["asked"] == "best" else "asked for; held-out")
        scores = ", ".join(f"{name} {_percent(value)}"
                           for name, value in remedy["candidates"].items())  # fmt: skip
        lines += ["", f"Remedy shipped: **{chosen}** ({how} mean {metric} %: {scores})."]
        if remedy.get("gain_over_zero_shot") is not None:
            lines[-1] += (f" Against zero-shot ({_percent(remedy['zero_shot'])}): "
                          f"{100 * remedy['gain_over_zero_shot']:+.1f} points; "
                          f"{remedy['comparison']['sentence']}")  # fmt: skip
    return lines


def _mapping(mapping: dict[str, str]) -> str:
    if all(k == v for k, v in mapping.items()):
        return "identity" if mapping else "none (the kNN serves every label)"
    return ", ".join(f"{k} → {v}" for k, v in mapping.items())


def _counts(per_label: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in per_label.items())


def _protocol_sentence(protocol: dict[str, Any], data: dict[str, Any]) -> str:
    if protocol["grouping"] == "speaker":
        how = (
            f"{protocol['folds']} folds grouped by speaker ({data['speakers']} speakers; no "
            "speaker is ever both in the datastore and among the queries)"
        )
    else:
        how = f"{protocol['folds']} folds stratified by label (no speakers given)"
    return (
        f"Cross-validation over the adaptation clips: {how}. For each fold the datastore holds "
        "the other folds' clips, k, α and T are tuned on those other folds by the same grouped "
        "cross-validation (a tuning query never sees itself or its own speaker or fold), and the "
        "fold's clips are scored by the model alone, the kNN alone and the interpolation. The "
        "shipped settings are tuned the same way on all clips."
    )


def _fold_words(run: dict) -> str:
    """What the fold's test and validation sets were, by the run's fold scheme."""
    test, val = run.get("test_speaker", "?"), run.get("val_speaker", "?")
    scheme = run.get("scheme", "speaker")
    if scheme == "official":
        return f"the corpus's official split: test set {test}, validation set {val}"
    if scheme == "session":
        return f"test session {test}, validation session {val}"
    if scheme == "emobox":
        return f"EmoBox's RAVDESS fold: test {test}, validation {val}"
    return f"test speaker {test}, validation speaker {val}"


def run_card(folder: str | os.PathLike, licence: str | None = None) -> str:
    """Markdown model card of a training run folder, from its own files: model.json (encoder,
    labels, window), train_config.json (corpus, fold, settings), knn.json (k, α, T and the
    validation score) and, for a `crossval` fold, fold_result.json (test-speaker WA/UA)."""
    from emoknn.model_folder import load_knn_settings, read_model_meta, read_run_config

    folder = Path(folder)
    meta, run = read_model_meta(folder), read_run_config(folder)
    settings = run["train_config"]
    licence = licence or "other"
    lines = [
        "---", f"license: {licence}", "library_name: emoknn",
        "pipeline_tag: audio-classification", "tags: [speech-emotion-recognition, knn, emoknn]",
        "---", "", f"# Speech emotion recognition: `{folder.name}`", "",
        "An emoknn model folder (Wang, Zhao & Qin, Interspeech 2023): an audio encoder fine-tuned "
        "with (1 − λ)·CE + λ·SupCon on augmented views, interpolated at inference with a "
        "k-nearest-neighbour model over the training embeddings: p = α·p_kNN + (1 − α)·p_model.",
        "", "| | |", "|---|---|",
        f"| encoder | `{meta.model_config.get('encoder')}` |",
        f"| labels | {', '.join(meta.labels)} |",
        f"| corpus | `{local_name(run.get('corpus', 'not recorded'))}` |",
        f"| fold | {run.get('fold', 'not recorded')} ({_fold_words(run)}) |",
        f"| training | preset {settings.get('preset_name')}, λ = "
        f"{settings.get('contrastive_weight')}, augmentation {settings.get('augment')}, "
        f"{settings.get('max_epochs')} epochs at most, crop {settings.get('max_seconds')} s |",
        f"| licence | {licence} |",
    ]  # fmt: skip
    if (folder / "knn.json").is_file():
        tuning = load_knn_settings(folder)
        chosen = tuning.interpolated
        lines.append(
            f"| kNN settings | k = {chosen.k}, α = {chosen.alpha}, T = "
            f"{chosen.to_dict()['temperature']}; validation-speaker {chosen.criterion.upper()} "
            f"{_percent(chosen.score)} % |"
        )
    result_file = folder / "fold_result.json"
    if result_file.is_file():
        scores = json.loads(result_file.read_text())["scores"]
        lines += ["", "## Measured on the held-out test speaker", "",
                  "| inference | UA % | WA % |", "|---|---:|---:|"]  # fmt: skip
        for name, title in INFERENCE_NAMES.items():
            if name in scores:
                title = title.replace(" (your clips)", "").replace(" (adapted)", "")
                lines.append(f"| {title} | {_percent(scores[name]['ua'])} | "
                             f"{_percent(scores[name]['wa'])} |")  # fmt: skip
        lines += ["", "One fold: see the cross-validation report for every fold and the paired "
                  "comparisons."]  # fmt: skip
    else:
        lines += ["", "No test-speaker figures are stored with this run (it was trained with "
                  "`emoknn train`; `emoknn crossval` measures every fold)."]  # fmt: skip
    advice = ("The figures hold for audio like the corpus above; measure again on yours (`emoknn "
              "adapt` adapts the model to your labelled clips without training).")  # fmt: skip
    lines += ["", "## Use", "", "```bash", "emoknn predict clip.wav --model THIS_FOLDER", "```",
              "", advice, ""]  # fmt: skip
    return "\n".join(lines)
