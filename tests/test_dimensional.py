"""Dimensional emotion: CCC, the regression losses, kNN regression and its tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoknn.errors import ConfigError, EmoknnError
from emoknn.knn import (
    DEFAULT_ALPHAS,
    TEMPERATURE_FACTORS,
    Datastore,
    knn_predict_values,
    knn_regress,
    tune_knn_regression,
)
from emoknn.losses import attribute_bins, ccc_loss, regression_loss, task_loss
from emoknn.metrics import ccc, ccc_columns, mean_absolute_error, pearson_r, regression_scores


def formula_ccc(x, y):
    """2ρσxσy / (σx² + σy² + (μx − μy)²), population moments, written out."""
    sx, sy = x.std(), y.std()
    rho = np.corrcoef(x, y)[0, 1]
    return 2 * rho * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


def test_ccc_equals_the_formula_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(3, 200))
        x = rng.normal(rng.normal(), rng.uniform(0.1, 3), n)
        y = 0.7 * x + rng.normal(rng.normal(), rng.uniform(0.1, 3), n)
        assert ccc(x, y) == pytest.approx(formula_ccc(x, y), rel=1e-10, abs=1e-12)
        assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-10)
        assert mean_absolute_error(x, y) == pytest.approx(np.abs(x - y).mean())
    x = rng.normal(size=50)
    x -= x.mean()
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0)
    assert ccc(x, x + 1.0) < ccc(x, x)  # a bias costs concordance, not correlation
    assert pearson_r(x, x + 1.0) == pytest.approx(1.0)


def test_ccc_of_constant_input_is_zero_never_nan():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(x, np.full(4, 2.5)) == 0.0
    assert ccc(np.full(4, 3.0), np.full(4, 3.0)) == 0.0
    assert ccc(np.full(4, 3.0), np.full(4, 1.0)) == 0.0
    assert pearson_r(np.full(4, 3.0), x) == 0.0
    with pytest.raises(ConfigError, match="equal length"):
        ccc([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match="finite"):
        ccc([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ConfigError, match="zero values"):
        ccc([], [])


def test_ccc_columns_and_scores_agree_with_ccc():
    rng = np.random.default_rng(1)
    truth, predicted = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    columns = ccc_columns(predicted, truth)
    for a in range(3):
        assert columns[a] == pytest.approx(ccc(predicted[:, a], truth[:, a]))
    scores = regression_scores(truth, predicted, ["arousal", "valence", "dominance"])
    assert scores["valence"]["ccc"] == pytest.approx(ccc(truth[:, 1], predicted[:, 1]))
    assert scores["mean"]["ccc"] == pytest.approx(columns.mean())


def test_ccc_loss_is_one_minus_mean_ccc_and_trains():
    rng = np.random.default_rng(2)
    predicted, target = rng.normal(size=(32, 3)), rng.normal(size=(32, 3))
    loss = ccc_loss(torch.tensor(predicted), torch.tensor(target))
    assert float(loss) == pytest.approx(1 - ccc_columns(predicted, target).mean(), rel=1e-5)
    mse = regression_loss(torch.tensor(predicted), torch.tensor(target), "mse")
    assert float(mse) == pytest.approx(((predicted - target) ** 2).mean(), rel=1e-5)
    constant = ccc_loss(torch.ones(4, 2), torch.ones(4, 2))
    assert torch.isfinite(constant)
    with pytest.raises(ConfigError, match="regression loss"):
        regression_loss(torch.zeros(2, 1), torch.zeros(2, 1), "l1")


def test_attribute_bins_and_task_losses():
    z = torch.tensor([[-1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [-0.1, 0.2, -2.0]])
    # bins: [0, 1, 2] → 0 + 3 + 18 = 21; [2, 2, 2] → 26; [1, 1, 0] → 1 + 3 = 4
    assert attribute_bins(z).tolist() == [21, 26, 4]
    torch.manual_seed(0)
    logits, embeddings = torch.randn(6, 4), torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    predicted, target = torch.randn(6, 3), torch.randn(6, 3)
    dims = task_loss("dimensional", logits, embeddings, labels, predicted, target, 0.0)
    assert float(dims.total) == pytest.approx(float(ccc_loss(predicted, target)))
    assert float(dims.cross_entropy) == 0.0
    both = task_loss("both", logits, embeddings, labels, predicted, target, 0.2, 0.1, "mse")
    ce = torch.nn.functional.cross_entropy(logits, labels)
    expected = 0.8 * (ce + torch.nn.functional.mse_loss(predicted, target)) + 0.2 * both.contrastive
    assert float(both.total) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ConfigError, match="needs predicted and target"):
        task_loss("both", logits, embeddings, labels)


def test_knn_regression_equals_a_direct_loop():
    rng = np.random.default_rng(3)
    distances = np.sort(rng.uniform(0.5, 3.0, size=(7, 5)), axis=1)
    values = rng.uniform(1, 5, size=(7, 5, 3))
    for temperature in (0.3, 2.0, np.inf):
        result = knn_regress(distances, values, temperature)
        for q in range(7):
            weights = [1.0 if np.isinf(temperature) else np.exp(-d / temperature)
                       for d in distances[q]]  # fmt: skip
            expected = sum(w * v for w, v in zip(weights, values[q], strict=True)) / sum(weights)
            np.testing.assert_allclose(result[q], expected, rtol=1e-10)
    with pytest.raises(ConfigError, match="temperature"):
        knn_regress(distances, values, 0.0)


def regression_problem(seed=0, n=300, q=60, d=8):
    rng = np.random.default_rng(seed)
    attributes = rng.uniform(1, 5, size=(n + q, 3))
    keys = np.concatenate([attributes, rng.normal(size=(n + q, d - 3))], axis=1)
    keys += rng.normal(scale=0.5, size=keys.shape)
    names = ["arousal", "valence", "dominance"]
    store = Datastore(keys[:n], np.zeros(n, dtype=int), ["x"], [f"s{i}" for i in range(n)],
                      "fp", values=attributes[:n], attributes=names)  # fmt: skip
    model_values = attributes[n:] + rng.normal(scale=0.8, size=(q, 3))
    return store, keys[n:], attributes[n:], model_values


def test_vectorised_regression_tuning_equals_a_grid_loop():
    store, queries, truth, model_values = regression_problem()
    tuning = tune_knn_regression(queries, truth, model_values, store, max_k=12)
    distances, indices = store.search(queries, 12)
    scale = float(np.median(distances[:, 0]))
    best = best_knn = None
    for temperature in [f * scale for f in TEMPERATURE_FACTORS] + [np.inf]:
        for k in range(1, 13):
            y_knn = knn_regress(distances[:, :k], store.values[indices[:, :k]], temperature)
            score = np.mean([ccc(y_knn[:, a], truth[:, a]) for a in range(3)])
            if best_knn is None or score > best_knn[0] + 1e-12:
                best_knn = (score, k, temperature)
            for alpha in DEFAULT_ALPHAS:
                mixed = alpha * y_knn + (1 - alpha) * model_values
                score = np.mean([ccc(mixed[:, a], truth[:, a]) for a in range(3)])
                if best is None or score > best[0] + 1e-12:
                    best = (score, k, alpha, temperature)
    chosen = tuning.interpolated
    assert chosen.criterion == "ccc"
    assert chosen.score == pytest.approx(best[0], abs=1e-7)
    assert (chosen.k, chosen.alpha) == (best[1], best[2])
    assert chosen.temperature == pytest.approx(best[3])
    assert tuning.knn_only.score == pytest.approx(best_knn[0], abs=1e-7)
    assert tuning.knn_only.k == best_knn[1] and tuning.knn_only.alpha == 1.0
    predicted = knn_predict_values(queries, model_values, store, chosen)
    assert np.mean(ccc_columns(predicted, truth)) == pytest.approx(chosen.score, abs=1e-7)
    # The kNN helps here: interpolation beats the noisy model alone.
    assert chosen.score > np.mean(ccc_columns(model_values, truth))


def test_regression_tuning_never_lets_a_query_see_itself_or_its_speaker():
    store = regression_problem(seed=1)[0]
    with pytest.raises(EmoknnError, match="find itself"):
        tune_knn_regression(store.keys[:10], store.values[:10], store.values[:10], store,
                            query_ids=store.ids[:10])  # fmt: skip
    # Groups: queries taken from the store itself only ever see other speakers' entries, and
    # tune exactly as against a store from which their speaker was removed.
    speakers = np.array([f"spk{i % 5}" for i in range(len(store))])
    mine = np.flatnonzero(speakers == "spk0")
    others = np.flatnonzero(speakers != "spk0")
    model_values = store.values[mine] + np.random.default_rng(2).normal(size=(len(mine), 3))
    grouped = tune_knn_regression(store.keys[mine], store.values[mine], model_values, store,
                                  query_ids=[store.ids[i] for i in mine], max_k=8,
                                  query_groups=speakers[mine], store_groups=speakers)  # fmt: skip
    apart = Datastore(store.keys[others], store.labels[others], store.label_names,
                      [store.ids[i] for i in others], "fp", values=store.values[others],
                      attributes=store.attributes)  # fmt: skip
    direct = tune_knn_regression(store.keys[mine], store.values[mine], model_values, apart,
                                 query_ids=[store.ids[i] for i in mine], max_k=8)  # fmt: skip
    assert grouped.to_dict() == direct.to_dict()


def test_datastore_values_checked_and_added():
    store, _, _, _ = regression_problem(n=20, q=2)
    with pytest.raises(ConfigError, match="need their values"):
        store.add(np.zeros((1, store.keys.shape[1])), np.array([0]), ["new"])
    new_key = np.zeros((1, store.keys.shape[1]))
    store.add(new_key, np.array([0]), ["new"], values=np.array([[1.0, 2, 3]]))
    assert store.subset([0, len(store) - 1]).values.tolist()[-1] == [1, 2, 3]
    assert store.values.shape == (21, 3) and store.values[-1].tolist() == [1, 2, 3]
    with pytest.raises(ConfigError, match="both attribute values"):
        Datastore(np.zeros((2, 3)), np.zeros(2, dtype=int), ["x"], ["a", "b"], "fp",
                  values=np.zeros((2, 1)))  # fmt: skip


def write_rated_iemocap(root):
    """A release-layout tree whose summary lines carry distinct [V, A, D] per utterance."""
    import soundfile as sf

    expected = {}
    for session in (1, 2):
        session_dir = root / f"Session{session}"
        evaluation_dir = session_dir / "dialog" / "EmoEvaluation"
        evaluation_dir.mkdir(parents=True)
        dialog = f"Ses0{session}F_impro01"
        (session_dir / "sentences" / "wav" / dialog).mkdir(parents=True)
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for j, code in enumerate(["ang", "neu", "exc", "sad", "fru"]):
            utterance = f"{dialog}_{'FM'[j % 2]}{j:03d}"
            v, a, d = 1.5 + j * 0.5, 4.5 - j * 0.5, 2.0 + session * 0.25 + j * 0.125
            summary = f"[{j * 3.0:.4f} - {j * 3.0 + 2.0:.4f}]\t{utterance}\t{code}\t"
            lines += [summary + f"[{v:.4f}, {a:.4f}, {d:.4f}]", "A-E1:\tval 3; act 2;\t()", ""]
            sf.write(session_dir / "sentences" / "wav" / dialog / f"{utterance}.wav",
                     np.zeros(1600, dtype=np.float32), 16000)  # fmt: skip
            if code != "fru":
                expected[utterance] = (a, v, d)
        (evaluation_dir / f"{dialog}.txt").write_text("\n".join(lines))
    return expected


def test_iemocap_attributes_match_a_generated_release_tree(tmp_path):
    from emoknn.corpora import load_iemocap

    expected = write_rated_iemocap(tmp_path)
    utterances = load_iemocap(tmp_path)
    assert {u.id for u in utterances} == set(expected)
    for u in utterances:
        assert (u.arousal, u.valence, u.dominance) == pytest.approx(expected[u.id])


def test_manifest_attribute_columns_round_trip_and_bad_values(tmp_path):
    import soundfile as sf

    from emoknn.corpora.manifest import load_manifest, write_manifest
    from emoknn.corpora.utterance import Utterance
    from emoknn.errors import CorpusError

    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    sf.write(tmp_path / "b.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "m.csv").write_text("path,label,speaker,arousal,valence\n"
                                    "a.wav,angry,s1,4.5,1.25\nb.wav,sad,s2,,2\n")  # fmt: skip
    a, b = load_manifest(tmp_path / "m.csv")
    assert (a.arousal, a.valence, a.dominance) == (4.5, 1.25, None)
    assert (b.arousal, b.valence) == (None, 2.0)
    write_manifest([a, b], tmp_path / "out.csv")
    again = load_manifest(tmp_path / "out.csv")
    assert [(u.arousal, u.valence, u.dominance) for u in again] == [(4.5, 1.25, None),
                                                                    (None, 2.0, None)]  # fmt: skip
    (tmp_path / "bad.csv").write_text("path,label,speaker,valence\na.wav,angry,s1,high\n")
    with pytest.raises(CorpusError, match=r"bad.csv:2: valence must be a finite number"):
        load_manifest(tmp_path / "bad.csv")
    plain = Utterance("x", tmp_path / "a.wav", "angry", "s1")
    write_manifest([plain], tmp_path / "plain.csv")
    assert (tmp_path / "plain.csv").read_text().splitlines()[0] == "path,label,speaker,session"


def test_synthetic_attributes_follow_the_generation_rules(tmp_path):
    from emoknn.corpora import generate_synthetic_corpus

    utterances = generate_synthetic_corpus(tmp_path / "c", num_sessions=1, utterances_per_class=6)
    means = {}
    for label in ("angry", "happy", "neutral", "sad"):
        rows = np.array([[u.arousal, u.valence, u.dominance] for u in utterances
                         if u.label == label])  # fmt: skip
        assert ((rows >= 1) & (rows <= 5)).all()
        means[label] = rows.mean(axis=0)
    assert means["angry"][0] > means["neutral"][0] > means["sad"][0]  # arousal
    assert means["happy"][1] > means["neutral"][1] > means["angry"][1]  # valence
    assert means["angry"][2] > means["sad"][2]  # dominance
