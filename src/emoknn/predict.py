"""Emotion of one's own audio: `EmotionRecognizer.load(model_dir).predict(paths_or_arrays)`.

    recognizer = EmotionRecognizer.load("runs/iemocap/scl/fold00-Ses01F")
    for result in recognizer.predict(["call.wav", "meeting.flac"]):
        print(result.source, result.label, result.probabilities)

A model folder is a training run (`model.safetensors` + `model.json`, with `datastore.npz` and
`knn.json` when the kNN stage was fitted; see emoknn.model_folder) or a folder `emoknn export`
wrote (ONNX Runtime, see emoknn.export); `EmotionRecognizer.load` and `load_recognizer` open
both. Each input gives the model's, the kNN model's and the interpolated class probabilities
(`probabilities` is the interpolated one, or the model's without kNN). The model's and the
interpolated probabilities are calibrated with the temperatures of the folder's
`calibration.json` (`emoknn.calibration`; T = 1 for a folder without one): the same labels,
with confidences fitted to the validation speakers' accuracy.

A dimensional model (`emoknn train --task dimensional|both`) also gives `arousal`, `valence`,
`dominance` (in its training corpus's scale): the interpolation α·ŷ_knn + (1 − α)·ŷ_model of the
regression kNN stage, or the model's own without kNN; `model_attributes` and `knn_attributes`
hold the two parts. A "dimensional" model predicts no class: `label` is None and the
probabilities are empty.

Inputs (`emoknn.inputs`: paths, arrays, `(array, rate)` pairs) longer than the model's crop length
(7.5 s for the paper preset) are split into segments (`emoknn.segments`), either fixed windows
(`window_seconds`, `hop_seconds`) or energy-based voice activity (`segmentation="vad"`); each
segment is predicted and the whole gets the duration-weighted mean. Files are read as a stream,
so memory does not grow with the file's length. `OnnxEmotionRecognizer` runs an export with
ONNX Runtime (`emoknn.onnx_runtime`).

Batches are sorted by length so padding stays small; padding does not change a prediction, so
a batch gives the same results as its items one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoknn.audio import (
    SAMPLE_RATE,
    audio_duration,
    center_crop,
    load_audio,
    max_samples,
    stream_audio,
)
from emoknn.calibration import Calibration
from emoknn.checks import check_choice, check_device, check_int, check_number
from emoknn.data import pad_batch
from emoknn.errors import AudioError, ConfigError, EmoknnError, ModelFolderError, SpeakerNormError
from emoknn.hf_import import hf_classifier_architecture, import_hf_classifier
from emoknn.hub import resolve_model
from emoknn.inference import best_device
from emoknn.inputs import AudioInput, as_input_list, check_input
from emoknn.knn import (
    Datastore,
    KnnSettings,
    Neighbour,
    TuningResult,
    check_neighbours,
    module_fingerprint,
    store_knn_search,
    store_knn_values,
)
from emoknn.model import EmotionModel
from emoknn.model_folder import (
    DATASTORE_FILE,
    ENROLMENT_SUFFIX,
    RUN_CONFIG_FILE,
    enrolment_path,
    has_model,
    is_export_folder,
    list_enrolments,
    load_calibration,
    load_checkpoint_model,
    load_enrolment,
    load_knn,
    load_model,
    onnx_model_file,
    predictable_labels,
    read_export_meta,
    read_model_meta,
)
from emoknn.onnx_runtime import check_onnx_outputs, onnx_session
from emoknn.segments import (
    LEVEL_FLOOR_DBFS,
    MAX_WINDOW_SECONDS,
    NO_SPEECH_DBFS,
    SEGMENTATIONS,
    speech_level_dbfs,
    voice_segments,
    window_segments,
)
from emoknn.speaker_stats import SpeakerStatistics, check_clip_count, features_key

NO_DATASTORE_NOTE = (
    "this model has no kNN datastore: predicting with the model alone (give it your labelled "
    "clips with `emoknn adapt` for the kNN stage)"
)
# Compute precision of the PyTorch forward. bf16 runs the encoder under autocast (convs and matmuls
# in bfloat16; the pooled embedding and the softmax in fp32). `bench/predict_throughput.py`
# measured it 2.4x faster at base size on a CPU with native bf16 (AVX512-BF16), with probabilities
# within 0.03 of fp32; on CPUs without native bf16 it can be slower (GPUs: not measured yet).
PRECISIONS = ("fp32", "bf16")


@dataclass
class Segment:
    start_s: float
    end_s: float
    label: str | None  # None for a dimensional model (no classes)
    probabilities: dict[str, float]
    no_speech: bool = False  # the segment is below NO_SPEECH_DBFS: its label means nothing
    neighbours: list[Neighbour] = field(default_factory=list)  # when asked (`neighbours=N`)
    attributes: dict[str, float] | None = None  # a dimensional model's final attributes


@dataclass
class Prediction:
    source: str
    label: str | None  # None for a "dimensional" model, which predicts no class
    probabilities: dict[str, float]  # interpolated (or the model's when kNN is off)
    model_probabilities: dict[str, float]
    knn_probabilities: dict[str, float] | None
    duration_s: float
    segments: list[Segment] = field(default_factory=list)
    # True when no part of the input is louder than NO_SPEECH_DBFS (silence, a constant signal,
    # faint noise): the model still gives probabilities, but there is no speech to judge, so
    # `label` should not be read as an emotion. Probabilities of the whole average its speech
    # segments only, when it has any.
    no_speech: bool = False
    level_dbfs: float = LEVEL_FLOOR_DBFS  # loudest 30 ms frame (RMS, mean removed), dBFS
    # The N nearest datastore entries when asked (`neighbours=N`), nearest first, each with its
    # share of `knn_probabilities`. For a long input: the N entries nearest to any of its (speech)
    # segments, at that smallest distance, with their duration-weighted mean share, so that the
    # shares still add up, with the other entries', to the whole's `knn_probabilities`.
    neighbours: list[Neighbour] = field(default_factory=list)
    # A dimensional model's attributes (its training corpus's scale), interpolated with the
    # regression kNN (or the model's when kNN is off); None for a categorical model.
    arousal: float | None = None
    valence: float | None = None
    dominance: float | None = None
    model_attributes: dict[str, float] | None = None
    knn_attributes: dict[str, float] | None = None
    # With speaker (or domain) statistics (`SpeakerStatistics.summary`): their kind, name, clip
    # count and the note "normalised with N unlabelled clips of speaker S"; None without.
    normalisation: dict[str, Any] | None = None

    @property
    def attributes(self) -> dict[str, float] | None:
        """The final attributes by name, or None (a categorical model)."""
        if self.model_attributes is None:
            return None
        return {name: getattr(self, name) for name in self.model_attributes}

    def to_dict(self) -> dict:
        return asdict(self)


class EmotionRecognizer:
    """A trained model (and its kNN stage) ready to predict. See the module docstring."""

    def __init__(
        self,
        model: EmotionModel,
        store: Datastore | None = None,
        knn_settings: KnnSettings | None = None,
        max_seconds: float = 7.5,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        if (store is None) != (knn_settings is None):
            raise ConfigError("give both a datastore and kNN settings, or neither")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = model.eval().to(device)
        self.store, self.knn_settings = store, knn_settings
        self.note: str | None = None  # what a user should know about how this model predicts
        self.max_seconds, self.device, self.precision = max_seconds, device, precision
        self.regression_settings = None  # KnnSettings of the regression kNN (`load` sets it)
        self.folder: Path | None = None  # the model folder it was loaded from (`load` sets it)
        self._features_key: str | None = None
        self.calibration = Calibration()  # the folder's temperatures (`load` sets them)

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        device: str | None = None,
        use_knn: bool = True,
        precision: str = "fp32",
    ) -> EmotionRecognizer:
        """Load a model folder (see the module docstring; an export folder gives an
        `OnnxEmotionRecognizer`), a training checkpoint `.ckpt` (the model alone: a checkpoint
        carries no kNN stage), or a Hugging Face audio classifier (folder; the model alone:
        it has no datastore until `emoknn adapt` gives it one). A Hub repo id `owner/name` is
        downloaded once (huggingface_hub's cache) and then loaded as the folder it is."""
        check_choice(precision, "precision", PRECISIONS)
        check_device(device)  # before loading: a missing GPU is not the model file's fault
        model_dir = resolve_model(_model_path(model_dir))
        if is_export_folder(model_dir):
            return _load_export(model_dir, device, use_knn, precision, int8=False)
        device = device or best_device()
        if model_dir.is_file() and model_dir.suffix == ".ckpt":
            model, max_seconds = load_checkpoint_model(model_dir, device)
            return cls(model, max_seconds=max_seconds, device=device, precision=precision)
        if not has_model(model_dir) and hf_classifier_architecture(model_dir) is not None:
            model, max_seconds = import_hf_classifier(model_dir)
            return cls(model, max_seconds=max_seconds, device=device, precision=precision)
        meta = read_model_meta(model_dir)
        if not use_knn and predictable_labels(meta.model_config) == []:
            raise ConfigError(
                f"{model_dir}: the model part knows none of its labels ({', '.join(meta.labels)}; "
                "it was adapted to labels its classifier never learnt), so it cannot predict "
                "without its kNN; drop --no-knn / use_knn=False"
            )
        model = load_model(model_dir, device)
        store = settings = tuning = None
        # A training run without its datastore is unfinished (`datastore build` fits it); any
        # other model folder without one (an imported classifier) predicts with the model alone.
        alone = not (model_dir / DATASTORE_FILE).is_file() and not (
            model_dir / RUN_CONFIG_FILE).is_file()  # fmt: skip
        if use_knn and not alone:
            store, tuning = load_knn(model_dir, meta.fingerprint, meta.labels,
                                     model.embedding_size)
            settings = tuning.interpolated
        recognizer = cls(model, store, settings, meta.max_seconds, device, precision)
        recognizer.folder = model_dir
        recognizer.calibration = load_calibration(model_dir)
        if use_knn and alone:
            recognizer.note = NO_DATASTORE_NOTE
        recognizer.regression_settings = _regression_settings(model.attributes, store,
                                                              tuning)  # fmt: skip
        return recognizer

    @property
    def attributes(self) -> list[str] | None:
        """The attributes the model predicts (arousal, valence, dominance), or None."""
        return self.model.attributes

    @property
    def predicts_classes(self) -> bool:
        """False for a "dimensional" model: it gives attributes only."""
        return self.model.predicts_classes

    def attribute_statistics(self) -> tuple[list[float], list[float]] | None:
        """The training mean and standard deviation of each attribute, or None."""
        config = self.model.config
        if config.attributes is None:
            return None
        return list(config.attribute_mean), list(config.attribute_std)

    def attribute_axes(self, spread: float = 2.5) -> dict[str, list[float]] | None:
        """{attribute: [mean − spread·std, mean + spread·std]} of the training ratings: the range
        a plot of predictions can use; None for a categorical model."""
        statistics = self.attribute_statistics()
        if statistics is None or self.attributes is None:
            return None
        return {name: [round(m - spread * s, 4), round(m + spread * s, 4)]
                for name, m, s in zip(self.attributes, *statistics, strict=True)}  # fmt: skip

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def forward_clips(
        self, clips: Sequence[np.ndarray], batch_size: int = 16,
        statistics: SpeakerStatistics | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Model probabilities (N, C) and embeddings (N, D) of clips, in length-sorted batches."""
        return self.forward_all(clips, batch_size, statistics)[:2]

    @torch.inference_mode()
    def forward_all(
        self, clips: Sequence[np.ndarray], batch_size: int = 16,
        statistics: SpeakerStatistics | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
        """`forward_clips`, and a dimensional model's attributes (N, A) (else None); with
        `statistics`, the pooled features standardised with them first (a speaker-normalised
        model needs them, any other refuses them: `EmotionModel.forward`).

        The one backend-specific step: `OnnxEmotionRecognizer` overrides it.
        """
        self.model.check_statistics(statistics is not None)
        moments = None
        if statistics is not None:
            statistics.check_key(self.features_key, "speaker statistics")
            moments = (torch.from_numpy(statistics.mean), torch.from_numpy(statistics.scale))
        count = len(clips)
        model_probs = np.zeros((count, len(self.labels)))
        embeddings = np.zeros((count, self.model.embedding_size), dtype=np.float32)
        attributes = None if self.attributes is None else np.zeros((count, len(self.attributes)))
        order = np.argsort([len(c) for c in clips], kind="stable")  # similar lengths together
        device_type = torch.device(self.device).type
        for start in range(0, count, batch_size):
            rows = order[start : start + batch_size]
            waveforms, lengths = pad_batch([clips[i] for i in rows])
            with torch.autocast(device_type, torch.bfloat16, enabled=self.precision == "bf16"):
                output = self.model(waveforms.to(self.device), lengths.to(self.device),
                                    statistics=moments)  # fmt: skip
            model_probs[rows] = torch.softmax(output.logits.float(), dim=1).cpu().numpy()
            embeddings[rows] = output.embeddings.float().cpu().numpy()
            if attributes is not None:
                attributes[rows] = output.attributes.float().cpu().numpy()
        return model_probs, embeddings, attributes

    def score(self, clips: Sequence[np.ndarray], batch_size: int = 16, neighbours: int = 0,
              statistics: SpeakerStatistics | None = None) -> dict[str, Any]:  # fmt: skip
        """Probabilities of clips (each ≤ the crop length): model (N, C), knn, final; with
        `neighbours`, also "search": the `KnnSearch` they came from (one index search either way);
        for a dimensional model also its attributes (N, A): attributes_model, attributes_knn,
        attributes_final. `statistics`: see `predict`.
        """
        check_int(batch_size, "batch_size", 1)
        self._check_neighbours(neighbours)
        model_probs, embeddings, attributes = self.forward_all(clips, batch_size, statistics)
        # Shown calibrated (`emoknn.calibration`); the interpolation mixes the raw ones, as tuned.
        calibrated = self.calibration.model(model_probs)
        scores: dict[str, Any] = {"model": calibrated, "knn": None, "final": calibrated}
        if self.store is not None and len(clips):
            search = store_knn_search(embeddings, self.store, self.knn_settings, neighbours)
            scores["knn"] = search.p_knn
            mixed = self.knn_settings.interpolate(search.p_knn, model_probs,
                                                  self.store.label_names)  # fmt: skip
            scores["final"] = self.calibration.interpolated(mixed, self.knn_settings)
            if neighbours:
                scores["search"] = search
                if not self.predicts_classes and self.regression_settings is not None:
                    # A dimensional model's kNN is the regression one: its neighbours carry the
                    # regression kNN's k and T (its classifier's kNN settings mean nothing).
                    scores["search"] = store_knn_search(embeddings, self.store,
                                                        self.regression_settings, neighbours)
        if attributes is not None:
            scores["attributes_model"] = scores["attributes_final"] = attributes
            scores["attributes_knn"] = None
            if self.regression_settings is not None and len(clips):
                y_knn = store_knn_values(embeddings, self.store, self.regression_settings)
                alpha = self.regression_settings.alpha
                scores["attributes_knn"] = y_knn
                scores["attributes_final"] = alpha * y_knn + (1.0 - alpha) * attributes
        return scores

    # ── speaker (or domain) statistics from unlabelled clips (emoknn.speaker_stats) ─────────

    @property
    def speaker_norm(self) -> bool:
        """Whether the model was trained with speaker normalisation: it then predicts only with
        a speaker's or domain's statistics (`speaker_statistics`, `enrolment`)."""
        return self.model.config.speaker_norm

    @property
    def min_clips(self) -> int:
        """The fewest clips the model accepts statistics from (0: it takes none)."""
        return self.model.config.speaker_norm_min_clips if self.speaker_norm else 0

    @property
    def features_key(self) -> str:
        """`emoknn.speaker_stats.features_key` of this model's pooled encoder features."""
        if self._features_key is None:
            config = self.model.config
            self._features_key = features_key(
                module_fingerprint(self.model.encoder), max_samples(self.max_seconds),
                config.pooling, config.normalize_waveforms, config.pad_to_seconds,
                (self.model.num_layers + 1, self.model.pooled_size),
            )  # fmt: skip
        return self._features_key

    def require_statistics(self, given: bool) -> None:
        """Refuse in one line, before any audio is read, a speaker-normalised model without
        statistics (`given` False) or any other model with them."""
        self.model.check_statistics(given)

    def _check_statistics(self, statistics: SpeakerStatistics | None) -> None:
        """Before any audio is read: statistics where the model needs them, and only there, of
        this model's features."""
        if statistics is not None and not isinstance(statistics, SpeakerStatistics):
            raise ConfigError(f"statistics must be SpeakerStatistics, got {statistics!r:.60}")
        self.require_statistics(statistics is not None)
        if statistics is not None:
            statistics.check_key(self.features_key, "speaker statistics")

    @torch.inference_mode()
    def speaker_statistics(
        self,
        clips: AudioInput | Sequence[AudioInput],
        name: str,
        kind: str = "speaker",
        batch_size: int = 16,
    ) -> SpeakerStatistics:
        """Statistics of a speaker's (`kind="speaker"`) or a domain's (`kind="domain"`)
        unlabelled clips: paths, 1-D 16 kHz arrays or `(array, rate)` pairs. Each clip's centred
        crop (the model's crop length, as in training) is encoded and pooled; nothing else is
        read (no label, no other clip). Refused in one line for a model trained without speaker
        normalisation, and below `min_clips` clips (before any audio is read).
        """
        if not self.speaker_norm:
            self.require_statistics(True)  # says why: the model standardises nothing
        check_int(batch_size, "batch_size", 1)
        items = [check_input(item) for item in as_input_list(clips)]
        check_clip_count(len(items), name, kind, self.min_clips)
        length = max_samples(self.max_seconds)
        crops = []
        for item in items:
            samples = load_audio(item) if isinstance(item, Path) else item[1]
            crops.append(center_crop(samples, length))
        pooled = np.zeros((len(crops), self.model.num_layers + 1, self.model.pooled_size),
                          dtype=np.float32)  # fmt: skip
        order = np.argsort([len(c) for c in crops], kind="stable")
        device_type = torch.device(self.device).type
        for start in range(0, len(crops), batch_size):
            rows = order[start : start + batch_size]
            waveforms, lengths = pad_batch([crops[i] for i in rows])
            with torch.autocast(device_type, torch.bfloat16, enabled=self.precision == "bf16"):
                layers = self.model.pooled_layers(waveforms.to(self.device),
                                                  lengths.to(self.device))  # fmt: skip
            pooled[rows] = layers.float().cpu().numpy()
        return SpeakerStatistics.from_features(pooled, name, kind, self.features_key,
                                               self.min_clips)  # fmt: skip

    def enrolment(self, name_or_path: str | os.PathLike) -> SpeakerStatistics:
        """Statistics enrolled earlier (`emoknn enrol`): a name the model folder keeps
        (`MODEL/enrolments/NAME.npz`) or an enrolment file's path; checked against this model's
        features."""
        path = Path(name_or_path)
        if path.suffix != ENROLMENT_SUFFIX:
            if self.folder is None:
                raise ConfigError(f"{name_or_path}: this model has no folder to keep enrolments; "
                                  "give an enrolment file")  # fmt: skip
            path = enrolment_path(self.folder, str(name_or_path))
            if not path.is_file():
                known = ", ".join(list_enrolments(self.folder)) or "none"
                raise SpeakerNormError(
                    f"{name_or_path!r}: not enrolled in {self.folder} (enrolled: {known}); "
                    f"enrol with `emoknn enrol --model {self.folder} --speaker {name_or_path} "
                    "CLIPS...`"
                )
        statistics = load_enrolment(path)
        self._check_statistics(statistics)
        statistics.check_key(self.features_key, str(path))
        return statistics

    def _check_neighbours(self, neighbours: int) -> int:
        neighbours = check_neighbours(neighbours)
        if neighbours and self.store is None:
            raise ConfigError(
                "neighbours: this model has no kNN datastore (or it was turned off), so no "
                "prediction has neighbours; build one with `emoknn datastore build` or `emoknn "
                "adapt`, or leave neighbours at 0"
            )
        return neighbours

    def predict(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        batch_size: int = 16,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        segmentation: str = "window",
        max_segments: int | None = None,
        neighbours: int = 0,
        statistics: SpeakerStatistics | None = None,
    ) -> list[Prediction]:
        """Predict each input: a path, a 1-D 16 kHz array, or an `(array, sample_rate)` pair
        (or a list of those). `max_segments` bounds the segments scored per input; `neighbours`
        (0 to 32, needs a datastore) lists that many nearest datastore entries per input and per
        segment (`Prediction.neighbours`). `statistics` (`speaker_statistics`, `enrolment`): the
        speaker's or domain's statistics every input is standardised with, which a model trained
        with speaker normalisation needs (and any other refuses); each prediction then says so
        (`Prediction.normalisation`).

        Raises AudioError for an input that cannot be used (use `predict_files` to skip those),
        ConfigError for a bad setting.
        """
        results = self._predict(as_input_list(inputs), batch_size, window_seconds, hop_seconds,
                                segmentation, skip_errors=False, max_segments=max_segments,
                                neighbours=neighbours, statistics=statistics)  # fmt: skip
        return results  # type: ignore[return-value]  # no errors without skip_errors

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int = 16,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        segmentation: str = "window",
        chunk_size: int = 256,
        max_segments: int | None = None,
        neighbours: int = 0,
        statistics: SpeakerStatistics | None = None,
    ) -> Iterator[Prediction | EmoknnError]:
        """Yield, in input order, a Prediction or the error that made a file unusable.

        Files are read and scored `chunk_size` at a time, batched within each chunk.
        `statistics`: see `predict`.
        """
        paths = as_input_list(paths)
        check_int(chunk_size, "chunk_size", 1)
        self._check_settings(batch_size, window_seconds, hop_seconds, segmentation, max_segments)
        self._check_neighbours(neighbours)
        self._check_statistics(statistics)
        for start in range(0, len(paths), chunk_size):
            chunk = list(paths[start : start + chunk_size])
            yield from self._predict(chunk, batch_size, window_seconds, hop_seconds, segmentation,
                                     skip_errors=True, max_segments=max_segments,
                                     neighbours=neighbours, statistics=statistics)  # fmt: skip

    def _check_settings(self, batch_size: int, window_seconds: float | None,
                        hop_seconds: float | None, segmentation: str, max_segments: int | None
                        ) -> tuple[int, int]:  # fmt: skip
        """Validate the prediction settings; return (window, hop) in samples."""
        check_int(batch_size, "batch_size", 1)
        check_choice(segmentation, "segmentation", SEGMENTATIONS)
        if max_segments is not None:
            check_int(max_segments, "max_segments", 1)
        return self._window(window_seconds, hop_seconds)

    def _predict(self, inputs: list, batch_size: int, window_seconds: float | None,
                 hop_seconds: float | None, segmentation: str, skip_errors: bool,
                 max_segments: int | None = None, neighbours: int = 0,
                 statistics: SpeakerStatistics | None = None,
                 ) -> list[Prediction | EmoknnError]:  # fmt: skip
        """Every input's clips (a short input is one clip; a long one, its streamed segments)
        share one pool, scored in length-sorted batches whenever it fills: batching stays full
        across inputs while memory stays bounded by the pool, however long the files."""
        window, hop = self._check_settings(batch_size, window_seconds, hop_seconds, segmentation,
                                           max_segments)  # fmt: skip
        neighbours = self._check_neighbours(neighbours)
        self._check_statistics(statistics)
        cut = window_segments if segmentation == "window" else voice_segments
        # The pool holds up to 8 batches of full windows' worth of samples (61 MB of float32 for
        # 7.5 s windows and batches of 16): many more clips when they are short, so that typical
        # collections are sorted as a whole.
        pool_budget = 8 * batch_size * window
        pool: list[tuple[_Tally, int, np.ndarray]] = []
        pooled_samples = 0

        def flush() -> None:
            nonlocal pooled_samples
            live = [(tally, start, clip) for tally, start, clip in pool if not tally.failed]
            scores = self.score([clip for _, _, clip in live], batch_size, neighbours,
                                statistics)  # fmt: skip
            search = scores.pop("search", None)
            for row, (tally, start, clip) in enumerate(live):
                near = None if search is None else (search.distances[row], search.indices[row],
                                                    search.weights[row])  # fmt: skip
                tally.add(start, len(clip), {name: None if value is None else value[row]
                                             for name, value in scores.items()},
                          speech_level_dbfs(clip), near)  # fmt: skip
            pool.clear()
            pooled_samples = 0

        def add(tally: _Tally, start: int, clip: np.ndarray) -> None:
            nonlocal pooled_samples
            tally.clips += 1
            if max_segments is not None and tally.clips > max_segments:
                # Raised before the extra clip is scored: the work per input stays bounded.
                raise ConfigError(
                    f"{tally.source}: needs more than {max_segments} segments with a "
                    f"{window / SAMPLE_RATE:g} s window and a {hop / SAMPLE_RATE:g} s hop; use a "
                    "larger hop or a shorter input"
                )
            pool.append((tally, start, clip))
            pooled_samples += len(clip)
            if pooled_samples >= pool_budget:
                flush()

        # Inputs in order of duration, so that each pool holds clips of similar length (little
        # padding); results go back to input order at the end. An input that is not audio at all
        # (a wrong type, a bad array) fails here, alone.
        tallies: list[_Tally | EmoknnError | None] = [None] * len(inputs)
        checked: list = [None] * len(inputs)
        for position, item in enumerate(inputs):
            try:
                checked[position] = check_input(item)
            except EmoknnError as error:
                if not skip_errors:
                    raise
                tallies[position] = error
        seconds = [0.0 if item is None else self._header_seconds(item) for item in checked]
        order = np.argsort(seconds, kind="stable")
        for position in order:
            item = checked[position]
            if item is None:
                continue
            tally = None
            try:
                source, samples, blocks = self._open(item, window, seconds[position])
                if samples is not None:
                    tally = _Tally(source, segmented=False, duration_s=len(samples) / SAMPLE_RATE)
                    tallies[position] = tally
                    add(tally, 0, samples)
                else:  # long: segments, streamed from the file or cut from the array
                    tally = _Tally(source, segmented=True)
                    tallies[position] = tally
                    for start, clip in cut(tally.count(blocks), window, hop):
                        add(tally, start, clip)
            except EmoknnError as error:
                if not skip_errors:
                    raise
                if tally is None:
                    tallies[position] = error
                else:
                    tally.failed = error
        if pool:
            flush()
        results: list[Prediction | EmoknnError] = []
        for tally in tallies:
            if isinstance(tally, EmoknnError):
                results.append(tally)
                continue
            try:
                prediction = tally.prediction(
                    self.labels,
                    knn=self.store is not None,
                    store=self.store,
                    neighbours=neighbours,
                    classes=self.predicts_classes,
                    attributes=self.attributes,
                )
                if statistics is not None:
                    prediction.normalisation = statistics.summary()
                results.append(prediction)
            except EmoknnError as error:
                if not skip_errors:
                    raise
                results.append(error)
        return results

    @property
    def max_input_seconds(self) -> float | None:
        """The longest input the encoder takes at once (Whisper: 30 s), or None for no limit."""
        return self.model.max_input_seconds

    def _window(self, window_seconds: float | None, hop_seconds: float | None) -> tuple[int, int]:
        limit = self.max_input_seconds
        if window_seconds is None:  # the crop length, within what the encoder takes
            window_seconds = self.max_seconds if limit is None else min(self.max_seconds, limit)
        window_seconds = check_number(window_seconds, "window_seconds", 0.5, MAX_WINDOW_SECONDS)
        if limit is not None and window_seconds > limit:
            raise ConfigError(
                f"window_seconds must be at most {limit:g} s for this model's encoder (the "
                f"longest input it takes at once), got {window_seconds}",
                setting="window_seconds",
            )
        if hop_seconds is None:
            hop_seconds = window_seconds
        hop_seconds = check_number(hop_seconds, "hop_seconds", 0.0, window_seconds,
                                   strict_minimum=True)  # fmt: skip
        return round(window_seconds * SAMPLE_RATE), max(1, round(hop_seconds * SAMPLE_RATE))

    @staticmethod
    def _header_seconds(item: Path | tuple[str, np.ndarray]) -> float:
        """Duration from the file header (0 if unreadable: reading it later says why)."""
        if isinstance(item, Path):
            try:
                return audio_duration(item)
            except AudioError:
                return 0.0
        return len(item[1]) / SAMPLE_RATE

    def _open(
        self, item: Path | tuple[str, np.ndarray], window: int, seconds: float
    ) -> tuple[str, np.ndarray | None, Iterator[np.ndarray] | None]:
        """(source name, samples if the input fits one window, else its blocks as a stream)."""
        if isinstance(item, Path):
            if seconds * SAMPLE_RATE > window:
                return str(item), None, stream_audio(item)
            return str(item), load_audio(item), None
        source, samples = item
        if len(samples) <= window:
            return source, samples, None
        return source, None, iter([samples])


def _regression_settings(attributes: list[str] | None, store: Datastore | None,
                         tuning: TuningResult | None) -> KnnSettings | None:  # fmt: skip
    """The regression kNN settings of a dimensional model's folder: None without kNN; an error
    when the model predicts attributes but its kNN stage has no regression part."""
    if attributes is None or store is None or tuning is None:
        return None
    if tuning.regression is None or store.attributes != list(attributes):
        raise ModelFolderError(
            "the model predicts attributes but its datastore has no attribute values or its "
            "knn.json no regression settings; rebuild them with `emoknn datastore build`"
        )
    return tuning.regression.interpolated


def load_recognizer(
    model: str | os.PathLike,
    device: str | None = None,
    use_knn: bool = True,
    precision: str = "fp32",
    int8: bool = False,
) -> EmotionRecognizer:
    """Whatever `model` names: a training run folder or a .ckpt file (PyTorch), or a folder
    written by `emoknn export` (ONNX Runtime on the CPU; `int8` picks its quantised model), or a
    Hugging Face audio classifier; any of them as a local folder or a Hub repo id."""
    path = resolve_model(_model_path(model))
    if is_export_folder(path):
        return _load_export(path, device, use_knn, precision, int8)
    if int8:
        raise ConfigError(
            f"{path}: int8 needs an ONNX export folder (write one with `emoknn export --model "
            f"{path} --quantize`, then predict with --model {path / 'onnx'} --int8)"
        )
    return EmotionRecognizer.load(path, device, use_knn, precision)


def _model_path(model: object) -> Path:
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise ConfigError(f"model must be the path of a model folder, got {model!r}")
    return Path(model)


def _load_export(path: Path, device: str | None, use_knn: bool, precision: str, int8: bool
                 ) -> OnnxEmotionRecognizer:  # fmt: skip
    if precision != "fp32":
        raise ConfigError(
            f"{path} is an ONNX export, which runs in fp32 (or int8 with --int8); "
            "--precision bf16 applies to PyTorch runs"
        )
    if device not in (None, "cpu"):
        raise ConfigError(f"{path} is an ONNX export, which runs on the CPU, not {device!r}")
    return OnnxEmotionRecognizer.load(path, quantized=int8, use_knn=use_knn)


class _Tally:
    """The running result of one input: its scored clips, summed by duration."""

    def __init__(self, source: str, segmented: bool, duration_s: float = 0.0) -> None:
        self.source, self.segmented, self.duration_s = source, segmented, duration_s
        self.failed: EmoknnError | None = None
        self.clips = 0  # segments produced so far (scored or waiting in the pool)
        self.level_dbfs = LEVEL_FLOOR_DBFS
        # Duration-weighted sums of each kind of probabilities, over every clip and over the
        # clips with speech: the whole is the mean over its speech when it has any.
        self.seconds = {"all": 0.0, "speech": 0.0}
        self.sums: dict[str, dict[str, np.ndarray]] = {"all": {}, "speech": {}}
        self.segments: list[tuple[int, int, np.ndarray, bool]] = []  # start, length, final, silent
        # Neighbours, when asked: per segment its rows (distances, indices, weights), and per
        # group each entry's smallest distance and duration-weighted share.
        self.segment_near: list[tuple | None] = []
        self.near: dict[str, dict[int, list[float]]] = {"all": {}, "speech": {}}

    def count(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass blocks through, adding up the input's duration."""
        for block in blocks:
            self.duration_s += len(block) / SAMPLE_RATE
            yield block

    def add(self, start: int, length: int, scores: dict[str, np.ndarray | None],
            level_dbfs: float, near: tuple | None = None) -> None:  # fmt: skip
        seconds = length / SAMPLE_RATE
        silent = level_dbfs < NO_SPEECH_DBFS
        self.level_dbfs = max(self.level_dbfs, level_dbfs)
        for group in ("all",) if silent else ("all", "speech"):
            for name, value in scores.items():
                if value is not None:
                    self.sums[group][name] = self.sums[group].get(name, 0.0) + seconds * value
            self.seconds[group] += seconds
            if near is not None:
                entries = self.near[group]
                for distance, index, weight in zip(*near, strict=True):
                    entry = entries.setdefault(int(index), [float(distance), 0.0])
                    entry[0] = min(entry[0], float(distance))
                    entry[1] += seconds * float(weight)
        if self.segmented:
            self.segments.append((start, length, scores["final"], silent,
                                  scores.get("attributes_final")))  # fmt: skip
            self.segment_near.append(near)

    def prediction(self, labels: list[str], knn: bool, store: Datastore | None = None,
                   neighbours: int = 0, classes: bool = True,
                   attributes: list[str] | None = None) -> Prediction:  # fmt: skip
        if self.failed is not None:
            raise self.failed
        if self.seconds["all"] == 0:
            raise AudioError(f"{self.source}: no speech found to predict (all segments silent)")

        def named(values: np.ndarray) -> dict[str, float]:
            return {label: float(p) for label, p in zip(labels, values, strict=True)}

        group = "speech" if self.seconds["speech"] > 0 else "all"
        sums, seconds = self.sums[group], self.seconds[group]
        final = sums["final"] / seconds  # duration-weighted mean over segments
        if not classes:  # a dimensional model: its classifier was never trained
            named = lambda values: {}  # noqa: E731
            label_of = lambda values: None  # noqa: E731
        else:
            label_of = lambda values: labels[int(np.argmax(values))]  # noqa: E731

        def rated(values: np.ndarray | None) -> dict[str, float] | None:
            if values is None or attributes is None:
                return None
            return {name: float(v) for name, v in zip(attributes, values, strict=True)}

        final_attributes = rated(sums["attributes_final"] / seconds) if attributes else None
        knn_attributes = sums.get("attributes_knn")  # absent without a kNN stage

        def listed(rows: Iterable[tuple[float, int, float]]) -> list[Neighbour]:
            return [Neighbour(store.ids[index], store.label_names[store.labels[index]], distance,
                              weight, store.sources[index] or None)
                    for distance, index, weight in rows]  # fmt: skip

        def segment_neighbours(near: tuple | None) -> list[Neighbour]:
            if near is None or not neighbours:
                return []
            distances, indices, weights = near
            return listed(zip(distances[:neighbours].tolist(), indices[:neighbours].tolist(),
                              weights[:neighbours].tolist(), strict=True))  # fmt: skip

        nearest = sorted(self.near[group].items(), key=lambda item: (item[1][0], item[0]))
        whole = (
            listed(
                (distance, index, share / seconds)
                for index, (distance, share) in nearest[:neighbours]
            )
            if neighbours
            else []
        )
        return Prediction(
            source=self.source,
            label=label_of(final),
            probabilities=named(final),
            model_probabilities=named(sums["model"] / seconds),
            knn_probabilities=named(sums["knn"] / seconds) if knn and classes else None,
            duration_s=round(self.duration_s, 3) if self.segmented else self.duration_s,
            segments=[
                Segment(
                    round(start / SAMPLE_RATE, 3),
                    round((start + length) / SAMPLE_RATE, 3),
                    label_of(p),
                    named(p),
                    no_speech=silent,
                    neighbours=segment_neighbours(near),
                    attributes=rated(a),
                )
                for (start, length, p, silent, a), near in zip(
                    self.segments, self.segment_near, strict=True
                )
            ],
            no_speech=self.seconds["speech"] == 0,
            level_dbfs=round(self.level_dbfs, 1),
            neighbours=whole,
            **(final_attributes or {}),
            model_attributes=rated(sums["attributes_model"] / seconds) if attributes else None,
            knn_attributes=None if knn_attributes is None else rated(knn_attributes / seconds),
        )


class OnnxEmotionRecognizer(EmotionRecognizer):
    """`EmotionRecognizer` running an exported ONNX model with onnxruntime (CPU)."""

    def __init__(self, session, labels: list[str], store: Datastore | None,
                 knn_settings, max_seconds: float, max_input_seconds: float | None = None
                 ) -> None:  # fmt: skip
        if (store is None) != (knn_settings is None):
            raise ConfigError("give both a datastore and kNN settings, or neither")
        self.session, self._labels = session, list(labels)
        self._attributes: list[str] | None = None  # a dimensional export's (export.json)
        self._task = "categorical"
        self.regression_settings = None
        self.calibration = Calibration()
        self.note: str | None = None
        self.store, self.knn_settings = store, knn_settings
        self.max_seconds, self.device, self.precision = max_seconds, "cpu", "fp32"
        self._max_input_seconds = max_input_seconds

    @property
    def max_input_seconds(self) -> float | None:
        """The longest input the exported graph takes (Whisper: 30 s), or None for no limit."""
        return self._max_input_seconds

    @classmethod
    def load(cls, export_dir: str | os.PathLike, quantized: bool = False,  # type: ignore[override]
             use_knn: bool = True) -> OnnxEmotionRecognizer:  # fmt: skip
        export_dir = _model_path(export_dir)
        meta = read_export_meta(export_dir)
        if quantized and "int8" not in meta:
            raise ModelFolderError(
                f"{export_dir}: this export has no int8 model (export with --quantize)"
            )
        model_file = onnx_model_file(export_dir, quantized)
        session = onnx_session(model_file)
        check_onnx_outputs(session, meta, model_file)
        store = settings = tuning = None
        # An export of a model with no datastore (an imported classifier) predicts alone.
        if use_knn and (export_dir / DATASTORE_FILE).is_file():
            store, tuning = load_knn(export_dir, meta["fingerprint"], meta["labels"],
                                     meta["embedding_size"])
            settings = tuning.interpolated
        recognizer = cls(session, meta["labels"], store, settings, meta["max_seconds"],
                         meta.get("max_input_seconds"))  # fmt: skip
        recognizer.calibration = load_calibration(export_dir)
        if use_knn and store is None:
            recognizer.note = NO_DATASTORE_NOTE
        recognizer._attributes = meta.get("attributes")
        recognizer._task = meta.get("task", "categorical")
        recognizer._statistics = meta.get("attribute_statistics")
        recognizer.regression_settings = _regression_settings(recognizer._attributes, store,
                                                              tuning)  # fmt: skip
        return recognizer

    @property
    def labels(self) -> list[str]:
        return self._labels

    @property
    def attributes(self) -> list[str] | None:
        return self._attributes

    @property
    def predicts_classes(self) -> bool:
        return self._task != "dimensional"

    def attribute_statistics(self) -> tuple[list[float], list[float]] | None:
        statistics = getattr(self, "_statistics", None)
        if not self._attributes or not isinstance(statistics, dict):
            return None
        return list(statistics["mean"]), list(statistics["std"])

    @property
    def speaker_norm(self) -> bool:
        return False  # `emoknn export` refuses a speaker-normalised model

    def require_statistics(self, given: bool) -> None:
        if given:
            raise SpeakerNormError(
                "speaker statistics were given, but an ONNX export runs without speaker "
                "normalisation (predict with the model folder instead)"
            )

    def _check_statistics(self, statistics: SpeakerStatistics | None) -> None:
        self.require_statistics(statistics is not None)

    def speaker_statistics(self, clips, name: str, kind: str = "speaker",
                           batch_size: int = 16) -> SpeakerStatistics:  # fmt: skip
        self.require_statistics(True)  # says why: an export takes no statistics
        raise AssertionError("unreachable")

    def forward_all(
        self, clips: Sequence[np.ndarray], batch_size: int = 16,
        statistics: SpeakerStatistics | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
        self._check_statistics(statistics)
        embeddings, probabilities, attributes = [], [], []
        for clip in clips:
            outputs = self.session.run(None, {"waveform": clip[None].astype(np.float32)})
            embedding, logits = outputs[0], outputs[1]
            exponent = np.exp(logits[0] - logits[0].max())
            probabilities.append(exponent / exponent.sum())
            embeddings.append(embedding[0])
            if self._attributes:
                attributes.append(outputs[2][0])
        width = self.session.get_outputs()[0].shape[-1]
        rated = None
        if self._attributes:
            rated = np.array(attributes, dtype=np.float64).reshape(len(clips), -1)
        if not clips:
            return (np.zeros((0, len(self.labels))), np.zeros((0, width), dtype=np.float32),
                    rated)  # fmt: skip
        return np.array(probabilities), np.array(embeddings, dtype=np.float32), rated
