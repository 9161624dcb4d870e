"""The model card (`README.md`) of an adapted model folder, generated from what was measured.

Everything in it comes from `adapt.json` (the same run): the source model and its encoder, the
clips, the label mapping, the protocol, per-fold and mean WA/UA of the model alone, the kNN alone
and the interpolation, the paired comparisons, the chosen k, α, T, and the licence field. Nothing
is written by hand, so the card cannot describe another model than the folder holds.
"""

from __future__ import annotations

from typing import Any

INFERENCE_NAMES = {
    "model": "model alone",
    "knn": "kNN alone (your clips)",
    "interpolated": "model + kNN (adapted)",
}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def model_card(report: dict[str, Any]) -> str:
    """Markdown with a Hugging Face front matter, from an `adapt.json` report."""
    source, data, protocol = report["source"], report["data"], report["protocol"]
    licence = report.get("licence") or "other"
    chosen = report["tuning"]["interpolated"]
    lines = [
        "---",
        f"license: {licence}",
        "library_name: emoknn",
        "pipeline_tag: audio-classification",
        "tags: [speech-emotion-recognition, knn, emoknn]",
        "---",
        "",
        f"# Emotion recognition adapted from `{source['name']}`",
        "",
        "An emoknn model folder: the source model's weights, unchanged, "
        "interpolated with a k-nearest-neighbour model over a datastore of labelled clips "
        "(`emoknn adapt`, no training): p = α·p_kNN + (1 − α)·p_model.",
        "",
        "| | |",
        "|---|---|",
        f"| source model | `{source['name']}` ({source['kind']}) |",
        f"| encoder | `{source['encoder']}` |",
        f"| labels | {', '.join(report['labels'])} |",
        f"| labels the model part predicts | {', '.join(report['model_labels']) or 'none'} |",
        f"| label map (model → these labels) | {_mapping(report['label_map'])} |",
        f"| adaptation clips | {data['clips']} from `{data['path']}` "
        f"({_counts(data['per_label'])}) |",
        f"| datastore | {data['clips']} clips"
        + (
            f" + {report['original_entries']} of the source model's"
            if report["kept_original_datastore"]
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
        "| inference | UA % (mean ± std over folds) | WA % (mean ± std) | UA % pooled | "
        "WA % pooled |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, title in INFERENCE_NAMES.items():
        row = report["summary"][name]
        lines.append(
            f"| {title} | {_percent(row['ua_mean'])} ± {_percent(row['ua_std'])} | "
            f"{_percent(row['wa_mean'])} ± {_percent(row['wa_std'])} | "
            f"{_percent(row['pooled_ua'])} | {_percent(row['pooled_wa'])} |"
        )
    lines += ["", *[f"- {c['sentence']}" for c in report["comparisons"]], "",
              f"Statistics: {protocol['statistics']}", "", "### Per fold", ""]  # fmt: skip
    speakers = protocol["grouping"] == "speaker"
    header = "| fold | " + ("held-out speakers | " if speakers else "") + "clips | "
    header += " | ".join(f"{INFERENCE_NAMES[n]} UA / WA %" for n in INFERENCE_NAMES) + " |"
    lines += [header, "|" + "---|" * (2 + speakers + len(INFERENCE_NAMES))]
    for record in report["per_fold"]:
        cells = [str(record["fold"])]
        if speakers:
            cells.append(", ".join(record["speakers"]))
        cells.append(str(record["clips"]))
        cells += [f"{_percent(record[n]['ua'])} / {_percent(record[n]['wa'])}"
                  for n in INFERENCE_NAMES]  # fmt: skip
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
