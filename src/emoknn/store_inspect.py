"""What a kNN datastore holds, and what in it looks wrong: `emoknn datastore inspect RUN`.

- counts per label and per speaker (speakers as the datastore recorded them; for a datastore
  written before it recorded speakers, from the run's corpus when it can be found);
- exact duplicates: entries whose embeddings are identical (the same audio stored twice, under
  two ids) — they count twice in every vote they take part in;
- near duplicates with another label: entries whose nearest other entry carries another label at
  a very small distance (≤ `near_factor` × the median nearest-neighbour distance of the store):
  the same or almost the same clip labelled twice, differently — one of the two is likely
  mislabelled;
- label disagreements: entries whose `vote_k` nearest other entries all carry one other label
  (a weaker sign of a mislabel, or of a clip unlike the rest of its class);
- a t-SNE map of the embeddings coloured by label, with the flagged entries ringed (PNG).

The distances are the model's embedding distances, so what counts as near depends on the model:
everything is measured relative to the store's own median nearest-neighbour distance.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emoknn.errors import ConfigError, EmoknnError
from emoknn.files import atomic_path, check_new_file
from emoknn.inference import fold_of_run
from emoknn.knn import Datastore
from emoknn.model_folder import load_datastore

NEAR_FACTOR = 0.25  # "very small": under a quarter of the typical nearest-neighbour distance
VOTE_K = 5


@dataclass
class Suspect:
    """An entry whose label its neighbourhood disagrees with."""

    id: str
    label: str
    neighbour_id: str  # the nearest entry of another label
    neighbour_label: str
    distance: float
    relative_distance: float  # distance / the store's median nearest-neighbour distance
    source: str | None = None
    neighbour_source: str | None = None


@dataclass
class DatastoreInspection:
    entries: int
    labels: dict[str, int]  # entries per label
    speakers: dict[str, dict[str, int]] | None  # speaker → label → entries (None: not recorded)
    median_nearest_distance: float
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical embeddings
    near_duplicates: list[Suspect] = field(default_factory=list)  # another label, very near
    disagreements: list[Suspect] = field(default_factory=list)  # all vote_k nearest differ
    near_factor: float = NEAR_FACTOR
    vote_k: int = VOTE_K
    plot: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        """A plain-text report (what the CLI prints)."""
        lines = [f"{self.entries} entries; median nearest-neighbour distance "
                 f"{self.median_nearest_distance:.4g}", "",
                 "per label: " + ", ".join(f"{k} {v}" for k, v in self.labels.items())]  # fmt: skip
        if self.speakers is None:
            lines.append("per speaker: not recorded in this datastore")
        else:
            names = list(self.labels)
            width = max([len(s) for s in self.speakers] + [7])
            lines += ["", f"{'speaker':<{width}}  " + "  ".join(f"{n:>8}" for n in names)
                      + "     total"]  # fmt: skip
            for speaker, counts in self.speakers.items():
                cells = "  ".join(f"{counts.get(n, 0):>8}" for n in names)
                lines.append(f"{speaker:<{width}}  {cells}  {sum(counts.values()):>8}")
        lines += ["", f"exact duplicates (identical embeddings): {len(self.duplicates)} group(s)"]
        lines += [f"  {' = '.join(group)}" for group in self.duplicates]
        lines += [
            "",
            f"near duplicates with another label (nearest entry of another label within "
            f"{self.near_factor:g} × the median distance): {len(self.near_duplicates)}",
        ]
        lines += [f"  {s.id} ({s.label}) ~ {s.neighbour_id} ({s.neighbour_label}): distance "
                  f"{s.distance:.4g} ({s.relative_distance:.3g} × median)"
                  for s in self.near_duplicates]  # fmt: skip
        lines += ["", f"label disagrees with all of its {self.vote_k} nearest entries: "
                      f"{len(self.disagreements)}"]  # fmt: skip
        lines += [f"  {s.id} ({s.label}): its neighbours are {s.neighbour_label} (nearest "
                  f"{s.neighbour_id}, {s.relative_distance:.3g} × median)"
                  for s in self.disagreements]  # fmt: skip
        if self.plot:
            lines += ["", f"t-SNE map: {self.plot}"]
        return "\n".join(lines)


def _duplicate_tolerance(store: Datastore) -> float:
    """Identical audio embeds identically up to float rounding (batch composition)."""
    return 1e-5 * (1.0 + float(np.abs(store.keys).max()))


def inspect_datastore(
    store: Datastore,
    near_factor: float = NEAR_FACTOR,
    vote_k: int = VOTE_K,
    speakers: dict[str, str] | None = None,
) -> DatastoreInspection:
    """Count, and find duplicates and likely mislabels in, `store` (see the module docstring).

    `speakers` (id → speaker) stands in for speakers the datastore did not record.
    """
    if not near_factor > 0:
        raise ConfigError(f"near_factor must be > 0, got {near_factor}")
    if isinstance(vote_k, bool) or not isinstance(vote_k, int) or vote_k < 1:
        raise ConfigError(f"vote_k must be a whole number ≥ 1, got {vote_k!r}")
    count = len(store)
    if count >= 2 and vote_k > count - 1:
        raise ConfigError(
            f"vote_k {vote_k}: the datastore holds {count} entries, so an entry has {count - 1} "
            f"others to vote; give at most {count - 1}", setting="vote_k"
        )
    names = store.label_names
    labels = {name: int((store.labels == i).sum()) for i, name in enumerate(names)}
    by_speaker = _speaker_counts(store, speakers)
    if count < 2:
        return DatastoreInspection(count, labels, by_speaker, 0.0, near_factor=near_factor,
                                   vote_k=vote_k)  # fmt: skip
    tolerance = _duplicate_tolerance(store)
    # Exact search over the keys (an HNSW store is searched exactly too: this is an audit).
    exact = Datastore(store.keys, store.labels, names, store.ids, store.fingerprint)
    width = min(count, 1 + vote_k + 32)
    distances, indices = exact.search(store.keys, width)  # includes each entry itself
    rows = np.arange(count)[:, None]
    is_self = indices == rows
    # Identical embeddings: union the pairs within the tolerance.
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    same = (distances <= tolerance) & ~is_self & (indices >= 0)
    for i, j in zip(*np.nonzero(same), strict=True):
        parent[root(int(i))] = root(int(indices[i, j]))
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    duplicates = sorted(
        (sorted(store.ids[i] for i in members) for members in groups.values() if len(members) > 1),
        key=lambda group: group[0],
    )
    # The typical spacing of the store: each entry's nearest other entry that is not a copy of it.
    others = ~is_self & (distances > tolerance)
    first_other = np.where(others.any(axis=1), np.argmax(others, axis=1), -1)
    nearest = distances[rows[:, 0], first_other][first_other >= 0]
    median = float(np.median(nearest)) if len(nearest) else 0.0
    scale = median if median > 0 else 1.0

    def suspect(i: int, column: int) -> Suspect:
        j = int(indices[i, column])
        return Suspect(store.ids[i], names[store.labels[i]], store.ids[j], names[store.labels[j]],
                       float(distances[i, column]), float(distances[i, column]) / scale,
                       store.sources[i] or None, store.sources[j] or None)  # fmt: skip

    near, disagree, pairs = [], [], set()
    for i in range(count):
        columns = np.flatnonzero(~is_self[i] & (indices[i] >= 0))
        same_label = store.labels[indices[i, columns]] == store.labels[i]
        # Copies of the entry with its own label are reported as duplicates, not as neighbours.
        columns = columns[~(same_label & (distances[i, columns] <= tolerance))]
        if len(columns):
            column = int(columns[0])  # the nearest other entry, if of another label and very near
            j = int(indices[i, column])
            pair = (min(i, j), max(i, j))
            if (store.labels[j] != store.labels[i] and distances[i, column] <= near_factor * scale
                    and pair not in pairs):  # fmt: skip
                pairs.add(pair)
                near.append(suspect(i, column))
        voters = columns[:vote_k]
        voter_labels = store.labels[indices[i, voters]]
        if (len(voters) == vote_k and (voter_labels != store.labels[i]).all()
                and len(set(voter_labels.tolist())) == 1):  # fmt: skip
            disagree.append(suspect(i, int(voters[0])))
    near.sort(key=lambda s: (s.distance, s.id))
    disagree.sort(key=lambda s: (s.relative_distance, s.id))
    return DatastoreInspection(count, labels, by_speaker, median, duplicates, near, disagree,
                               near_factor, vote_k)  # fmt: skip


def _speaker_counts(store: Datastore, fallback: dict[str, str] | None
                    ) -> dict[str, dict[str, int]] | None:  # fmt: skip
    speakers = [s or (fallback or {}).get(id_, "") for s, id_ in zip(store.speakers, store.ids,
                                                                      strict=True)]  # fmt: skip
    if not any(speakers):
        return None
    counts: dict[str, Counter] = {}
    for speaker, label in zip(speakers, store.labels.tolist(), strict=True):
        counts.setdefault(speaker or "(unknown)", Counter())[store.label_names[label]] += 1
    return {speaker: dict(counts[speaker]) for speaker in sorted(counts)}


def plot_datastore(
    store: Datastore,
    path: str | os.PathLike,
    inspection: DatastoreInspection | None = None,
    seed: int = 0,
) -> Path:
    """A t-SNE map of the datastore's embeddings coloured by label (PNG, written atomically);
    entries `inspection` flagged are ringed (black: a pair of different labels very near; purple:
    exact duplicates; grey: disagrees with its neighbours)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"{path}: the plot is written as .png, .pdf or .svg")
    if len(store) < 4:
        raise ConfigError(f"the datastore holds {len(store)} entries; a map needs at least 4")
    keys = store.keys.astype(np.float64)
    if keys.shape[1] > 50 and len(keys) > 50:  # the usual t-SNE preprocessing: faster, same map
        keys = PCA(50, random_state=seed).fit_transform(keys)
    perplexity = float(min(30.0, max(2.0, (len(keys) - 1) / 3)))
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(keys)
    figure, axes = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10")
    for index, name in enumerate(store.label_names):
        chosen = store.labels == index
        if chosen.any():
            axes.scatter(points[chosen, 0], points[chosen, 1], s=12, color=colours(index % 10),
                         label=f"{name} ({int(chosen.sum())})", alpha=0.8)  # fmt: skip
    if inspection is not None:
        row_of = {id_: i for i, id_ in enumerate(store.ids)}
        pairs = [i for s in inspection.near_duplicates for i in (s.id, s.neighbour_id)]
        copies = [i for group in inspection.duplicates for i in group]
        for ids, colour, title in (
            ([s.id for s in inspection.disagreements], "grey", "disagrees with its neighbours"),
            (pairs, "black", "another label very near (both ringed)"),
            (copies, "purple", "exact duplicate"),
        ):
            rows = [row_of[i] for i in ids]
            if rows:
                axes.scatter(points[rows, 0], points[rows, 1], s=80, facecolors="none",
                             edgecolors=colour, linewidths=1.2, label=title)  # fmt: skip
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"datastore: {len(store)} entries (t-SNE, perplexity {perplexity:.0f})")
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format=path.suffix.lstrip(".").lower())
    plt.close(figure)
    return path


def inspect_run(
    run_dir: str | os.PathLike,
    plot: str | os.PathLike | None = None,
    near_factor: float = NEAR_FACTOR,
    vote_k: int = VOTE_K,
    seed: int = 0,
) -> DatastoreInspection:
    """`inspect_datastore` on the datastore of a model folder (a run, an export, an adapted
    model), with its t-SNE map written to `plot` when given: a new file (an existing one is
    refused, not overwritten; nothing is written unasked). Speakers the datastore did not record
    come from the run's corpus when it is still there."""
    if plot is not None:  # checked before any work: never overwritten, never a traceback
        if Path(plot).suffix.lower() not in (".png", ".pdf", ".svg"):
            raise ConfigError(f"{plot}: the plot is written as .png, .pdf or .svg")
        check_new_file(plot, "the plot")
    store = load_datastore(run_dir)
    fallback = None
    if not any(store.speakers):
        try:
            fold = fold_of_run(run_dir)
            fallback = {u.id: u.speaker for u in fold.train + fold.val}
        except EmoknnError:
            fallback = None  # an export or a moved corpus: speakers stay unknown
    inspection = inspect_datastore(store, near_factor, vote_k, fallback)
    if plot is not None:
        inspection.plot = str(plot_datastore(store, plot, inspection, seed))
    return inspection
