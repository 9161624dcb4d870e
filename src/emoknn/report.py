"""Reports of a cross-validation: results.json → report.md with tables and figures.

Figures (matplotlib, PNG): a row-normalised confusion matrix per variant pooled over folds (like
the paper's Figure 3) and a t-SNE of test embeddings of CE vs CE+SCL models on one fold (like its
Figure 4; t-SNE with a fixed random_state, so the plot is the same on every run). Dimensional
tasks add a section: CCC, Pearson r and MAE per attribute (mean ± std over folds), paired
comparisons of the mean CCC, and per training a scatter plot of predicted vs true per attribute,
pooled over folds, model alone beside + kNN.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from emoknn import baseline, probe
from emoknn.experiments import INFERENCES, PREDICTIONS_FILE, collect_fold_results, write_results
from emoknn.files import write_text_atomic
from emoknn.metrics import confusion_matrix
from emoknn.stats import METHOD_NOTE, p_text, signed_points

# The paper's results on IEMOCAP with wav2vec2-base, 10-fold speaker-independent CV: (WA, UA) %.
PAPER_RESULTS: dict[str, tuple[float, float]] = {
    "CE": (71.35, 71.84),
    "CE + kNN": (71.85, 72.61),
    "CE+SCL": (73.32, 74.45),
    "CE+SCL + kNN": (74.13, 75.14),
    "CE+SCL (noise)": (72.02, 73.23),
    "CE+SCL (volume)": (72.72, 73.97),
    "CE+SCL (reverb)": (72.64, 73.81),
    "CE+SCL (pitch)": (72.75, 73.88),
}
SYNTHETIC_WARNING = (
    "> **Synthetic data.** These results come from emoknn's generated corpus (a buzzing "
    "source–filter voice whose prosody depends on the label). They show that the pipeline runs "
    "and learns; they say nothing about emotion recognition on real speech, and they are not "
    "comparable to the paper's IEMOCAP numbers, which are listed for reference only."
)


SPEAKER_NORM_NOTE = (
    "- **speaker normalisation on** (`--speaker-norm`, transductive): each speaker's features "
    "were standardised with that speaker's own clips, the test speaker's unlabelled clips "
    "included; figures are not comparable with runs without it"
)


ECE_NOTE = (
    "ECE: expected calibration error of the test speakers' probabilities (10 equal-width "
    "confidence bins, `emoknn.metrics.expected_calibration_error`; 0 = each bin's confidence "
    "equals its accuracy), mean over folds, as `predict` shows them: the model's and the "
    "interpolation's temperature-scaled with temperatures fitted on validation speakers "
    "(`emoknn.calibration`); in brackets before that. The kNN alone is not rescaled."
)


def _ece_cell(row: dict[str, Any]) -> str:
    """ "3.1 (7.4)": the calibrated ECE % and the raw one; "—" for variants without one."""
    if "ece_mean" not in row:
        return "—"
    raw = f" ({100 * row['ece_raw_mean']:.1f})" if "ece_raw_mean" in row else ""
    return f"{100 * row['ece_mean']:.1f}{raw}"


def _percent(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _read_predictions(fold_dir: Path) -> list[dict[str, str]]:
    with (fold_dir / PREDICTIONS_FILE).open(newline="") as handle:
        return list(csv.DictReader(handle))


def plot_confusions(results: dict[str, Any], labels: list[str], figures: Path) -> dict[str, str]:
    """One PNG per variant: row-normalised confusion matrix pooled over folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {label: i for i, label in enumerate(labels)}
    pooled: dict[str, np.ndarray] = {}
    variant_of = {(r["training"], r["inference"]): r["variant"] for r in results["records"]}
    for key, fold_dir in results["fold_dirs"].items():
        training = key.split("/")[0]
        if not (Path(fold_dir) / PREDICTIONS_FILE).is_file():
            continue  # a dimensional model's fold: no classes
        rows = _read_predictions(Path(fold_dir))
        truth = [index[r["label"]] for r in rows]
        for inference in (i for i in INFERENCES if (training, i) in variant_of):
            variant = variant_of[(training, inference)]
            matrix = confusion_matrix(truth, [index[r[inference]] for r in rows], len(labels))
            pooled[variant] = pooled.get(variant, 0) + matrix
    paths = {}
    figures.mkdir(parents=True, exist_ok=True)
    for variant, counts in pooled.items():
        normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        figure, axes = plt.subplots(figsize=(4.2, 3.8))
        image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                color = "white" if normalised[i, j] > 0.6 else "black"
                axes.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", color=color)
        axes.set_xticks(range(len(labels)), labels, rotation=30)
        axes.set_yticks(range(len(labels)), labels)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(variant, fontsize=10)
        figure.colorbar(image, ax=axes, fraction=0.046)
        figure.tight_layout()
        name = (
            "confusion-" + "".join(c if c.isalnum() else "-" for c in variant).strip("-") + ".png"
        )
        figure.savefig(figures / name, dpi=120)
        plt.close(figure)
        paths[variant] = f"figures/{name}"
    return paths


def plot_tsne(results: dict[str, Any], figures: Path) -> str | None:
    """t-SNE of the test embeddings of the CE and CE+SCL models on the first fold with both."""
    import matplotlib
    from sklearn.manifold import TSNE

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = results["fold_dirs"]
    folds = sorted({key.split("/")[1] for key in dirs})
    fold = next((f for f in folds if f"ce/{f}" in dirs and f"scl/{f}" in dirs), None)
    if fold is None:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    for axis, (training, title) in zip(axes, (("ce", "CE"), ("scl", "CE+SCL")), strict=True):
        with np.load(Path(dirs[f"{training}/{fold}"]) / "test_embeddings.npz") as stored:
            embeddings, labels = stored["embeddings"], stored["labels"]
            names = stored["label_names"].tolist()
        perplexity = float(min(30, max(2, len(embeddings) // 4)))
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(
            embeddings
        )
        for class_id, name in enumerate(names):
            chosen = labels == class_id
            axis.scatter(points[chosen, 0], points[chosen, 1], s=12, label=name)
        axis.set_title(f"{title} — test embeddings, {fold}", fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[1].legend(loc="best", fontsize=8)
    figure.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    figure.savefig(figures / "tsne-ce-vs-scl.png", dpi=120)
    plt.close(figure)
    return "figures/tsne-ce-vs-scl.png"


def _signed(fraction: float | None) -> str:
    return "—" if fraction is None else signed_points(fraction, decimals=2)


def comparison_lines(comparisons: list[dict[str, Any]]) -> list[str]:
    """The report's section on paired comparisons: a summary table, the per-fold differences and
    one sentence per comparison."""
    if not comparisons:
        return []
    lines = [
        "## Is each difference real? Paired comparisons over folds", "",
        "Each comparison pairs the two variants fold by fold (difference = first − second, in "
        f"points of %). {METHOD_NOTE}", "",
        "| comparison | folds | test | ΔUA (95 % CI) | p (UA) | ΔWA (95 % CI) | p (WA) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for c in comparisons:
        cells = []
        for metric in ("ua", "wa"):
            m = c[metric]
            interval = ("" if m["ci_low"] is None
                        else f" ({_signed(m['ci_low'])} to {_signed(m['ci_high'])})")  # fmt: skip
            cells += [f"{_signed(m['mean'])}{interval}", p_text(m["p_value"])]
        test = "Wilcoxon signed-rank" if c["ua"]["test"] == "wilcoxon" else "sign test"
        lines.append(f"| {c['name']} | {len(c['folds'])} | {test} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {c['sentence']}" for c in comparisons]
    folds = sorted({f for c in comparisons for f in c["folds"]})
    short = [f.split("-")[0] for f in folds]
    lines += [
        "", "Per-fold differences (first − second), UA / WA points:", "",
        "| comparison | " + " | ".join(short) + " |",
        "|---|" + "---:|" * len(folds),
    ]  # fmt: skip
    for c in comparisons:
        by_fold = {f: i for i, f in enumerate(c["folds"])}
        cells = [
            f"{_signed(c['ua']['differences'][by_fold[f]])} / "
            f"{_signed(c['wa']['differences'][by_fold[f]])}"
            if f in by_fold
            else "—"
            for f in folds
        ]
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _mean_std(row: dict[str, Any], key: str, decimals: int = 3) -> str:
    return f"{row[key + '_mean']:.{decimals}f} ± {row[key + '_std']:.{decimals}f}"


def dimensional_lines(results: dict[str, Any], figures: Path) -> list[str]:
    """The report's section for dimensional tasks: scores per attribute, comparisons, scatter
    plots."""
    summary = results["dimensional_summary"]
    attributes = summary[0]["attributes"]
    lines = [
        "## Dimensional attributes (arousal, valence, dominance)", "",
        "CCC = 2·cov / (σ²_pred + σ²_true + (μ_pred − μ_true)²), population moments; Pearson r; "
        "MAE in the corpus's own scale. Mean ± sample standard deviation over folds. *kNN only* "
        "is the similarity-weighted mean of the neighbours' ratings (α = 1); *+ kNN* its tuned "
        f"interpolation with the model. *{baseline.RIDGE_LABEL}*: "
        f"{results.get('ridge_baseline', baseline.RIDGE_DESCRIPTION)}. With `--task "
        "dimensional`, *Reg* is the regression loss alone (λ = 0) and *Reg+SCL* adds SupCon on "
        "binned attributes; with `--task both`, *CE* and *CE+SCL* train classes and attributes "
        "together.", "",
        "| variant | folds | mean CCC | " + " | ".join(f"CCC {a}" for a in attributes)
        + " | " + " | ".join(f"r {a}" for a in attributes) + " | "
        + " | ".join(f"MAE {a}" for a in attributes) + " |",
        "|---|---:|" + "---:|" * (1 + 3 * len(attributes)),
    ]  # fmt: skip
    for row in summary:
        cells = [_mean_std(row, "ccc_mean")]
        cells += [_mean_std(row, f"ccc_{a}") for a in attributes]
        cells += [_mean_std(row, f"pearson_{a}") for a in attributes]
        cells += [_mean_std(row, f"mae_{a}") for a in attributes]
        lines.append(f"| {row['variant']} | {row['folds']} | " + " | ".join(cells) + " |")
    comparisons = results.get("dimensional_comparisons") or []
    if comparisons:
        lines += [
            "", "Paired comparisons of the mean CCC over folds (difference = first − second). "
            f"{METHOD_NOTE}", "",
            "| comparison | folds | test | ΔCCC (95 % CI) | p |", "|---|---:|---|---:|---:|",
        ]  # fmt: skip
        for c in comparisons:
            interval = ("" if c["ci_low"] is None
                        else f" ({c['ci_low']:+.3f} to {c['ci_high']:+.3f})")  # fmt: skip
            test = "Wilcoxon signed-rank" if c["test"] == "wilcoxon" else "sign test"
            lines.append(f"| {c['name']} | {len(c['folds'])} | {test} | {c['mean']:+.3f}"
                         f"{interval} | {p_text(c['p_value'])} |")  # fmt: skip
    lines += ["", "Per fold (mean CCC over attributes; k, α, T of the regression kNN):", "",
              "| variant | fold | mean CCC | k | α | T |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for record in results["dimensional_records"]:
        temperature = record["temperature"]
        shown_t = "—" if temperature is None else (
            "∞" if temperature == "inf" else f"{float(temperature):.3g}")  # fmt: skip
        k = record["k"] if record["k"] is not None else "—"
        lines.append(f"| {record['variant']} | {record['fold']} | {record['ccc_mean']:.3f} | "
                     f"{k} | {record['alpha']:g} | {shown_t} |")  # fmt: skip
    for training, path in plot_attribute_scatter(results, figures).items():
        lines += ["", f"![predicted vs true, {training}]({path})"]
    return [*lines, ""]


def plot_attribute_scatter(results: dict[str, Any], figures: Path) -> dict[str, str]:
    """Per training: predicted vs true of each attribute pooled over folds, one row per
    inference present (model alone; + kNN), with the identity line and the pooled CCC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emoknn.experiments import ATTRIBUTE_PREDICTIONS_FILE
    from emoknn.metrics import ccc

    pooled: dict[str, list[dict[str, str]]] = {}
    for key, fold_dir in sorted(results["fold_dirs"].items()):
        path = Path(fold_dir) / ATTRIBUTE_PREDICTIONS_FILE
        if path.is_file():
            with path.open(newline="") as handle:
                pooled.setdefault(key.split("/")[0], []).extend(csv.DictReader(handle))
    attributes = results["dimensional_summary"][0]["attributes"]
    paths = {}
    figures.mkdir(parents=True, exist_ok=True)
    for training, rows in pooled.items():
        shown = [i for i in ("model", "interpolated") if f"{attributes[0]}_{i}" in rows[0]]
        figure, axes = plt.subplots(len(shown), len(attributes), squeeze=False,
                                    figsize=(3.3 * len(attributes), 3.2 * len(shown)))  # fmt: skip
        for i, inference in enumerate(shown):
            for j, attribute in enumerate(attributes):
                truth = np.array([float(r[f"{attribute}_true"]) for r in rows])
                predicted = np.array([float(r[f"{attribute}_{inference}"]) for r in rows])
                axis = axes[i, j]
                axis.scatter(truth, predicted, s=6, alpha=0.5)
                low = float(min(truth.min(), predicted.min()))
                high = float(max(truth.max(), predicted.max()))
                axis.plot([low, high], [low, high], color="grey", linewidth=0.8)
                title = "model" if inference == "model" else "+ kNN"
                axis.set_title(f"{attribute}, {title}: CCC {ccc(truth, predicted):.2f}",
                               fontsize=9)  # fmt: skip
                axis.set_xlabel("true")
                axis.set_ylabel("predicted")
        figure.tight_layout()
        name = "scatter-" + "".join(c if c.isalnum() else "-" for c in training) + ".png"
        figure.savefig(figures / name, dpi=110)
        plt.close(figure)
        paths[training] = f"figures/{name}"
    return paths


def _protocol_words(meta: dict) -> str:
    """The protocol sentence of a report: which split, and whether it is speaker-independent."""
    protocol = meta.get("protocol")
    scheme = protocol.get("scheme") if isinstance(protocol, dict) else None
    if scheme in (None, "speaker"):
        return (
            "leave-one-speaker-out, speaker-independent: the test speaker is unseen, the "
            "validation speaker picks the checkpoint and tunes k, α, T"
        )
    if scheme == "session":
        return (
            "leave-one-session-out, speaker-independent: the test session's speakers are "
            "unseen, the validation session picks the checkpoint and tunes k, α, T"
        )
    independence = (
        "speaker-independent: no speaker is in two sets"
        if protocol.get("speaker_independent")
        else "NOT speaker-independent: the corpus's own sets share speakers"
    )
    if scheme == "cross-speaker":
        independence = ("the test speaker is unseen; validation clips come from the training "
                        "speakers, so k, α, T are tuned on seen voices")  # fmt: skip
    return (
        f"{protocol.get('protocol', scheme)} (the per-fold table names the test and validation "
        f"sets), {independence}"
    )


def probe_lines(records: list[dict[str, Any]]) -> list[str]:
    """The encoder probe's choices per fold (layer and C, chosen on the validation speaker)."""
    rows = [r for r in records if r["training"] == probe.NAME]
    if not rows:
        return []
    lines = [
        "", f"## {probe.LABEL}: the layer and C chosen on each fold's validation set", "",
        "| fold | test / val speaker | layer | C | validation UA % | test UA % |",
        "|---|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        val_ua = f"{100 * r['val_ua']:.2f}" if isinstance(r.get("val_ua"), float) else "—"
        lines.append(f"| {r['fold']} | {r['test_speaker']} / {r['val_speaker']} | "
                     f"{r['layer']} | {r['c']:g} | {val_ua} | {100 * r['ua']:.2f} |")  # fmt: skip
    by_layer = [r.get("val_ua_by_layer") for r in rows]
    numbers = lambda v: isinstance(v, list) and all(isinstance(x, float) for x in v)  # noqa: E731
    if all(numbers(v) and v and len(v) == len(by_layer[0]) for v in by_layer):
        means = np.mean(np.array(by_layer, dtype=np.float64), axis=0)
        layers = ", ".join(f"layer {i} {100 * m:.1f}" for i, m in enumerate(means))
        lines += ["", f"Validation UA % of each layer (its best C), mean over folds: {layers}."]
    return lines



def _baseline_label(results: dict[str, Any]) -> str:
    """The classical baseline's row name in these results (its feature set is in the name)."""
    features = results.get("baseline_features")
    return baseline.label(features) if features in baseline.FEATURE_SETS else baseline.LABEL

def write_report(
    run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, meta: dict[str, Any]
) -> Path:
    """Merge the finished folds under `run_dirs` into OUT/results.json and OUT/report.md."""
    out_dir = Path(out_dir)
    fold_results = collect_fold_results(run_dirs)
    results = write_results(fold_results, out_dir, meta)
    labels = list(meta.get("labels") or [])
    if not labels:
        labels = sorted({r["label"] for d in results["fold_dirs"].values()
                         if (Path(d) / PREDICTIONS_FILE).is_file()
                         for r in _read_predictions(Path(d))})  # fmt: skip
    figures = out_dir / "figures"
    confusion_paths = plot_confusions(results, labels, figures)
    tsne_path = plot_tsne(results, figures)

    lines = [f"# emoknn cross-validation report — {meta.get('corpus_name', 'corpus')}", ""]
    if meta.get("synthetic"):
        lines += [SYNTHETIC_WARNING, ""]
    folds = sorted({r["fold"] for r in results["records"] + results.get("dimensional_records", [])})
    lines += [
        f"- corpus: `{meta.get('corpus', '?')}` ({meta.get('num_utterances', '?')} utterances, "
        f"classes: {', '.join(labels)})",
        f"- folds evaluated: {len(folds)} ({', '.join(folds)}), {_protocol_words(meta)}",
        f"- preset: `{meta.get('preset', '?')}`, encoder: `{meta.get('encoder', '?')}`",
        *([SPEAKER_NORM_NOTE] if meta.get("speaker_norm") else []),
        f"- created {results['created']} by emoknn {results['emoknn_version']}",
        "",
        "WA = accuracy over utterances; UA = mean of per-class recalls. Mean ± sample standard "
        "deviation over folds, in %. *kNN only* is α = 1; *+ kNN* is the tuned interpolation. "
        f"*{_baseline_label(results)}* is a classical baseline on the same folds: "
        f"{results.get('baseline', baseline.DESCRIPTION)}. "
        f"*{probe.LABEL}*, the bar a learned head has to clear, is the simplest use of the "
        f"encoder on the same folds: {probe.DESCRIPTION}.",
        "",
        "## Results",
        "",
        "| variant | folds | WA % | UA % | ECE % (raw) | paper WA / UA (IEMOCAP) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["summary"]:
        paper = PAPER_RESULTS.get(row["variant"])
        reference = f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "—"
        lines.append(
            f"| {row['variant']} | {row['folds']} | {_percent(row['wa_mean'], row['wa_std'])} | "
            f"{_percent(row['ua_mean'], row['ua_std'])} | {_ece_cell(row)} | {reference} |"
        )
    if any("ece_mean" in row for row in results["summary"]):
        lines += ["", ECE_NOTE]
    lines += ["", *comparison_lines(results["comparisons"])]
    if results.get("dimensional_records"):
        lines += dimensional_lines(results, figures)
    lines += [
        "## Per fold", "",
        "| variant | fold | test / val speaker | WA % | UA % | k | α | T |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for record in results["records"]:
        temperature = record["temperature"]
        shown_t = "—" if temperature is None else (
            "∞" if temperature == "inf" else f"{float(temperature):.3g}")  # fmt: skip
        lines.append(
            f"| {record['variant']} | {record['fold']} | {record['test_speaker']} / "
            f"{record['val_speaker']} | {100 * record['wa']:.2f} | {100 * record['ua']:.2f} | "
            f"{record['k'] if record['k'] is not None else '—'} | {record['alpha']:g} | {shown_t} |"
        )
    lines += probe_lines(results["records"])
    lines += ["", "## Confusion matrices (pooled over folds, rows normalised)", ""]
    for variant, path in confusion_paths.items():
        lines.append(f"![{variant}]({path})")
    if tsne_path:
        lines += ["", "## Test embeddings: CE vs CE+SCL (t-SNE)", "", f"![t-SNE]({tsne_path})"]
    lines += ["", "Machine-readable results: `results.json` (one record per fold and variant).", ""]
    report = out_dir / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return report
