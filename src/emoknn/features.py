"""The feature cache of a frozen encoder: every layer's pooled output, computed once per view.

With the encoder frozen, the model's head needs only `EmotionModel.pooled_layers` of each
utterance, (L + 1, P): every hidden state pooled over its real frames (P = H for the mean; 2H
for mean and standard deviation, `pooling="mean_std"`, which gets its own cache folder). The head
weighs layers after pooling, so its layer-weighted embedding is exact on these features. They are
computed once for the original (the centred crop evaluation uses) and for K augmented views of
each utterance, and stored on disk:

    CACHE/                             default: `emoknn-features` beside the output folder
      <encoder key>/                   one folder per encoder weights + crop length + normalisation
        encoder.json                   what that key covers, for people reading the folder
        shard-<time>-<pid>-<n>.npz     keys (N,) entry keys; features (N, L + 1, H)

An entry key is a hash of everything else that changes a value: the audio file's content (the
SHA-256 of its bytes), and for a view the utterance id, seed, view index and the augmentation
(its name and parameters, and the room impulse responses it draws from). A file's content hash is
computed once and remembered (in `CACHE/content-hashes.json`) under its resolved path, size,
modification time, inode and status-change time: a file rewritten with its old size and time
restored (`cp -p`, `rsync -t`, `tar`) has a new inode or status-change time, so it is hashed
again, and never served the old file's features. View k of an utterance
is `augmentation(random_crop(audio), rng)` with `rng = default_rng([seed, hash(utterance id), k])`,
the same whatever else is filled alongside. A changed file, setting or encoder gives new keys, so a
stale entry is never read; entries of a fill are written in shards of a few hundred, each written
to a temporary file and renamed, so an interrupted fill keeps what it finished and the next one
computes only what is missing. Originals are stored in float32 (so cached and live embeddings
agree to float rounding); views, which only training reads, in float16 (relative error ≤ 2^-11)
unless a value would overflow it.

Precision (`precision`): "fp32" (default), "bf16-views" (the views are encoded under bfloat16
autocast; the originals, which the datastore, validation and evaluation read, stay fp32 and equal
to live prediction) or "bf16" (everything under bfloat16 autocast). An entry's key names its
precision whenever it is not fp32, so bf16 features are never served as fp32 ones (and fp32 keys
are those of earlier versions). bfloat16 needs a GPU that has it or a CPU with AVX512-BF16/AMX
(`bf16_supported`); elsewhere it is refused, not emulated. fp32 stays the default: on this
project's AVX512-BF16 (no AMX) CPU, bf16 autocast filled whisper-base's cache at 0.78-0.92x the
fp32 speed (`bench/feature_cache.py`; docs/training.md has the figures).

Threads: the fill runs torch on `fill_threads()` threads: $EMOKNN_THREADS if set, else
$OMP_NUM_THREADS if set, else the cores this process may use (its CPU affinity, capped by a cgroup
CPU quota) less the cores other processes keep busy (the 1-minute load average, rounded), at least
one. More threads than free cores makes every op wait for the slowest thread: on this project's
2-core machine at load 14, the tiny encoder took 3.3-3.5 s per batch on 2 threads and 0.53-0.60 s
on 1 (`bench/feature_cache.py` prints the count it used).

    cache = FeatureCache(root, model, max_seconds=7.5)
    cache.fill(utterances, augmentation, seed=0, views=4)        # computes only what is missing
    originals = cache.originals(utterances)                     # (N, L + 1, H) float32
    views = cache.views(utterances, augmentation, seed=0, views=4)  # (K, N, L + 1, H) float16
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoknn import files
from emoknn.audio import SAMPLE_RATE, center_crop, load_audio, max_samples, random_crop
from emoknn.augment import Augmentation, Mixed, Reverberate
from emoknn.corpora.utterance import Utterance
from emoknn.data import pad_batch
from emoknn.errors import AudioError, ConfigError, EmoknnError
from emoknn.files import atomic_path, check_writable_folder, write_json_atomic
from emoknn.knn import module_fingerprint
from emoknn.model import EmotionModel

FORMAT_VERSION = 1  # bump when what a key means changes (the pooling, the crop, the views' seeding)
CACHE_FOLDER_NAME = "emoknn-features"
SHARD_ENTRIES = 256  # entries per shard file: what an interruption can lose at most
FLOAT16_MAX = float(np.finfo(np.float16).max)
CACHE_PRECISIONS = ("fp32", "bf16-views", "bf16")
THREADS_ENV = "EMOKNN_THREADS"


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively (CUDA: Ampere or newer; CPU: AVX512-BF16 or
    AMX, as oneDNN reports it)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _cgroup_cpus() -> int | None:
    """The CPU quota of this process's cgroup (v2 `cpu.max`, v1 cfs files), in whole cores."""
    candidates = [
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ]
    for quota_file, period_file in candidates:
        try:
            if period_file is None:
                quota, period = Path(quota_file).read_text().split()[:2]
            else:
                quota = Path(quota_file).read_text().strip()
                period = Path(period_file).read_text().strip()
            if quota in ("max", "-1"):
                return None
            return max(1, int(int(quota) // int(period)))
        except (OSError, ValueError):
            continue
    return None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpus()
    return max(1, min(cores or 1, quota or cores or 1))


def fill_threads() -> int:
    """torch threads for a fill: $EMOKNN_THREADS, else $OMP_NUM_THREADS, else the available cores
    less those other processes keep busy, at least 1 (module docstring)."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"${name} must be a whole number ≥ 1, got {value!r}")
            return int(value)
    cores = available_cores()
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch runs on `count` threads inside, as before outside."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


CONTENT_HASHES_FILE = "content-hashes.json"


def default_cache_dir(out_dir: str | os.PathLike) -> Path:
    """`emoknn-features` beside the output folder: runs in the same parent folder share it."""
    return Path(out_dir).resolve().parent / CACHE_FOLDER_NAME


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def augmentation_identity(augmentation: Augmentation) -> str:
    """Name and parameters of an augmentation, and a digest of the room impulse responses it
    draws from (a changed RIR folder changes the views)."""
    rirs = []
    parts = augmentation.augmentations if isinstance(augmentation, Mixed) else [augmentation]
    for part in parts:
        if isinstance(part, Reverberate):
            digest = hashlib.sha256()
            for rir in part.rirs:
                digest.update(np.ascontiguousarray(rir).tobytes())
            rirs.append(digest.hexdigest())
    return f"{augmentation!r} rirs={rirs}"


def utterance_seed(utterance_id: str) -> int:
    """A stable 64-bit integer from an utterance id (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.sha256(utterance_id.encode()).digest()[:8], "little")


def _file_stamp(path: Path, shown: str | os.PathLike) -> str:
    """What identifies a file's current version without reading it: resolved path, size,
    modification time, inode and status-change time (the last two change when the file is
    replaced or rewritten, even with its old modification time restored)."""
    try:
        stat = path.stat()
    except OSError as error:
        raise AudioError(f"{shown}: cannot read the audio file ({error.strerror})") from error
    return f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_ctime_ns}"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of an audio file's bytes."""
    try:
        return files.file_sha256(path)
    except OSError as error:
        raise AudioError(f"{path}: cannot read the audio file ({error.strerror})") from error


class ContentHashes:
    """Content hashes of audio files, each computed once per file version (`_file_stamp`) and
    kept in `root/content-hashes.json` for the next run. A damaged or missing file only costs
    hashing again."""

    def __init__(self, root: Path) -> None:
        self.path = root / CONTENT_HASHES_FILE
        self._known: dict[str, str] | None = None
        self._new = 0

    def _load(self) -> dict[str, str]:
        if self._known is None:
            self._known = {}
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict):
                self._known = {k: v for k, v in data.items()
                               if isinstance(k, str) and isinstance(v, str)}  # fmt: skip
        return self._known

    def of(self, audio: str | os.PathLike) -> str:
        path = Path(audio).resolve()
        stamp = _file_stamp(path, audio)
        known = self._load()
        value = known.get(stamp)
        if value is None:
            value = known[stamp] = file_sha256(path)
            self._new += 1
        return value

    def save(self) -> None:
        """Write the hashes computed since the last save (merged with what is on disk now)."""
        if not self._new or self._known is None:
            return
        try:
            on_disk = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            on_disk = {}
        merged = {**(on_disk if isinstance(on_disk, dict) else {}), **self._known}
        try:
            write_json_atomic(merged, self.path)
        except OSError:
            return  # a read-only cache folder: hashed again next time
        self._new = 0


@dataclass(frozen=True)
class ViewSpec:
    """Which augmented views: K views of `augmentation`, seeded from `seed`."""

    augmentation: Augmentation
    seed: int
    views: int

    def identity(self) -> str:
        return augmentation_identity(self.augmentation)


@dataclass
class FillStats:
    """What one `fill` did."""

    entries: int  # entries asked for
    computed: int  # of them, computed now (the rest were already cached)
    seconds: float
    audio_seconds: float  # of audio encoded now



def index_shard_keys(shards: list[Path], scanned: set[Path],
                     index: dict[str, tuple[Path, int]]) -> None:  # fmt: skip
    """Add each not yet `scanned` shard's keys to `index` (key → (shard, row); the first shard
    holding a key wins). An unreadable shard (damaged outside emoknn) is skipped: its entries count
    as missing and are computed again."""
    for shard in shards:
        if shard in scanned:
            continue
        scanned.add(shard)
        try:
            with np.load(shard, allow_pickle=False) as stored:
                keys = stored["keys"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            continue
        for row, key in enumerate(keys.tolist()):
            index.setdefault(key, (shard, row))

class FeatureCache:
    """Pooled per-layer encoder outputs of utterances and their views, on disk (module doc)."""

    def __init__(self, root: str | os.PathLike, model: EmotionModel, max_seconds: float,
                 precision: str = "fp32") -> None:  # fmt: skip
        if precision not in CACHE_PRECISIONS:
            raise ConfigError(f"cache precision must be one of {', '.join(CACHE_PRECISIONS)}, "
                              f"got {precision!r}", setting="cache_precision")  # fmt: skip
        self.root = Path(root)
        self.model = model
        self.precision = precision
        self.max_length = max_samples(max_seconds)
        self.shape = (model.num_layers + 1, model.pooled_size)
        encoder = {
            "format": FORMAT_VERSION,
            "encoder": model.config.encoder,
            "encoder_config": model.config.encoder_config,
            "weights_sha256": module_fingerprint(model.encoder),
            "normalize_waveforms": model.config.normalize_waveforms,
            "crop_samples": self.max_length,
            "shape": list(self.shape),
        }
        # Statistics pooling's [mean, std] starts with exactly what mean pooling stores, so a mean
        # cache also reads the entries of the same encoder's mean_std folder (their first H).
        self._wider: Path | None = None
        if model.config.pooling != "mean":  # (mean pooling's keys stay those of earlier caches)
            encoder["pooling"] = model.config.pooling
        else:
            stats = {**encoder, "pooling": "mean_std", "shape": [self.shape[0], 2 * self.shape[1]]}
            self._wider = self.root / _digest(stats)[:20]
        self.folder = self.root / _digest(encoder)[:20]
        self._encoder_info = encoder
        self._index: dict[str, tuple[Path, int]] = {}  # entry key → (shard, row)
        self._loaded: dict[Path, np.ndarray] = {}  # shard → its features, once read
        self._scanned: set[Path] = set()
        self.hashes = ContentHashes(self.root)

    # ---- keys -------------------------------------------------------------------------------

    def _audio_identity(self, utterance: Utterance) -> dict[str, Any]:
        return {"sha256": self.hashes.of(utterance.path)}

    def _bf16(self, views: bool) -> bool:
        """Whether entries of this kind (views, or originals) are encoded under bf16."""
        return self.precision == "bf16" or (views and self.precision == "bf16-views")

    def _key(self, audio: dict[str, Any], view: dict[str, Any] | None) -> str:
        identity: dict[str, Any] = {"audio": audio, "view": view}
        if self._bf16(view is not None):
            identity["precision"] = "bf16"  # fp32 keys stay those of earlier versions
        return _digest(identity)[:32]

    def original_keys(self, utterances: Sequence[Utterance]) -> list[str]:
        keys = [self._key(self._audio_identity(u), None) for u in utterances]
        self.hashes.save()
        return keys

    def view_keys(self, utterances: Sequence[Utterance], spec: ViewSpec) -> list[list[str]]:
        """keys[k][i]: view k of utterance i."""
        identity = spec.identity()
        audio = [self._audio_identity(u) for u in utterances]
        self.hashes.save()
        keys = []
        for k in range(spec.views):
            views = [
                {"utterance": u.id, "seed": spec.seed, "index": k, "augmentation": identity}
                for u in utterances
            ]
            keys.append([self._key(a, v) for a, v in zip(audio, views, strict=True)])
        return keys

    # ---- reading ------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Index the shards on disk not yet indexed (their keys only; features on demand); this
        folder's first, then those of the same encoder's statistics-pooling folder (mean only)."""
        folders = [self.folder] + ([self._wider] if self._wider is not None else [])
        shards = [s for folder in folders if folder.is_dir()
                  for s in sorted(folder.glob("shard-*.npz"))]  # fmt: skip
        index_shard_keys(shards, self._scanned, self._index)

    def _features_of(self, shard: Path) -> np.ndarray:
        features = self._loaded.get(shard)
        if features is None:
            remedy = "delete it (its entries are computed again on the next run)"
            try:
                with np.load(shard, allow_pickle=False) as stored:
                    features = stored["features"]
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise EmoknnError(
                    f"{shard}: a damaged feature-cache shard ({message}); {remedy}"
                ) from error
            expected = self.shape
            if shard.parent == self._wider:  # [mean, std]: the mean is the first half
                expected = (self.shape[0], 2 * self.shape[1])
            if features.ndim != 3 or features.shape[1:] != expected:
                raise EmoknnError(
                    f"{shard}: features of shape {features.shape[1:]}, expected {expected}; "
                    f"delete the cache folder {shard.parent}"
                )
            if shard.parent == self._wider:
                features = np.ascontiguousarray(features[..., : self.shape[1]])
            if features.dtype.kind != "f" or not np.isfinite(features).all():
                raise EmoknnError(
                    f"{shard}: the feature cache holds NaN or infinite features (damaged); {remedy}"
                )
            self._loaded[shard] = features
        return features

    def missing(self, keys: Sequence[str]) -> list[str]:
        self._scan()
        return [key for key in keys if key not in self._index]

    def gather(self, keys: Sequence[str], dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Cached entries (len(keys), L + 1, H); every key must be cached."""
        self._scan()
        out = np.empty((len(keys), *self.shape), dtype=dtype)
        for row, key in enumerate(keys):
            location = self._index.get(key)
            if location is None:
                raise EmoknnError(
                    f"feature cache {self.folder}: entry {key} is missing; fill first"
                )
            shard, shard_row = location
            out[row] = self._features_of(shard)[shard_row]
        return out

    def originals(self, utterances: Sequence[Utterance]) -> np.ndarray:
        """(N, L + 1, H) float32 features of the originals (centred crops); filled if missing."""
        self.fill(utterances, None)
        return self.gather(self.original_keys(utterances))

    def views(self, utterances: Sequence[Utterance], spec: ViewSpec) -> np.ndarray:
        """(K, N, L + 1, H) float16 features of the augmented views; filled if missing."""
        if spec.views == 0:
            return np.empty((0, len(utterances), *self.shape), dtype=np.float16)
        self.fill(utterances, spec, originals=False)
        return np.stack(
            [self.gather(keys, np.float16) for keys in self.view_keys(utterances, spec)]
        )

    def size_bytes(self) -> int:
        """Bytes on disk of this encoder's folder."""
        if not self.folder.is_dir():
            return 0
        return sum(path.stat().st_size for path in self.folder.iterdir() if path.is_file())

    def num_entries(self) -> int:
        self._scan()
        return len(self._index)

    # ---- filling ------------------------------------------------------------------------------

    def fill(
        self,
        utterances: Sequence[Utterance],
        spec: ViewSpec | None,
        originals: bool = True,
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
    ) -> FillStats:
        """Compute and store every entry of `utterances` not yet cached: the originals (unless
        `originals` is False) and, with a `spec`, its K views. `progress(done, total)` is called
        after each batch."""
        start = time.perf_counter()
        wanted: list[tuple[Utterance, str, int | None]] = []  # (utterance, key, view or None)
        if originals:
            keys = self.original_keys(utterances)
            wanted += [(u, key, None) for u, key in zip(utterances, keys, strict=True)]
        if spec is not None:
            for view, keys in enumerate(self.view_keys(utterances, spec)):
                wanted += [(u, key, view) for u, key in zip(utterances, keys, strict=True)]
        missing = set(self.missing([key for _, key, _ in wanted]))
        todo: dict[str, tuple[Utterance, list[tuple[str, int | None]]]] = {}
        for utterance, key, view in wanted:
            if key in missing:
                todo.setdefault(utterance.id, (utterance, []))[1].append((key, view))
                missing.discard(key)  # the same utterance listed twice: compute it once
        jobs = list(todo.values())
        total = sum(len(entries) for _, entries in jobs)
        if total == 0:
            return FillStats(len(wanted), 0, time.perf_counter() - start, 0.0)
        device = next(self.model.parameters()).device
        if self.precision != "fp32" and not bf16_supported(device):
            raise ConfigError(
                f"cache precision {self.precision}: this {device.type.upper()} has no native "
                "bfloat16 (a CPU needs AVX512-BF16 or AMX, a GPU Ampere or newer); use fp32",
                setting="cache_precision",
            )
        # Before computing anything: a cache that cannot store what is computed would lose it.
        check_writable_folder(self.folder, "the feature cache folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        info_file = self.folder / "encoder.json"
        if not info_file.is_file():
            write_json_atomic(self._encoder_info, info_file)

        augmentation = spec.augmentation if spec is not None else None
        seed = spec.seed if spec is not None else 0
        # Entries of another precision than the rest are encoded in a pass of their own.
        passes: dict[bool, list[tuple[Utterance, list[tuple[str, int | None]]]]] = {}
        for utterance, entries in jobs:
            for entry in entries:
                bf16 = self._bf16(entry[1] is not None)
                group = passes.setdefault(bf16, [])
                if not group or group[-1][0] is not utterance:
                    group.append((utterance, []))
                group[-1][1].append(entry)
        model = self.model
        was_training = model.training
        model.eval()
        # Originals and views go to separate shards: originals float32, views float16.
        pending: dict[bool, tuple[list[str], list[np.ndarray]]] = {True: ([], []), False: ([], [])}
        done = 0
        audio_samples = 0
        source_of = {key: u.path for u, entries in jobs for key, _ in entries}
        try:
            with torch_threads(fill_threads()):
                for bf16, group in passes.items():
                    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                                else nullcontext())  # fmt: skip
                    batches = _clip_batches(group, self.max_length, augmentation, seed, batch_size)
                    for clips in _prefetched(batches):
                        done, audio_samples = self._encode(clips, autocast, pending, done,
                                                           audio_samples, source_of)  # fmt: skip
                        if progress is not None:
                            progress(done, total)
            for is_view, (keys, rows) in pending.items():
                if keys:
                    self._write_shard(keys, rows, is_view)
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - start
        return FillStats(len(wanted), total, seconds, audio_samples / SAMPLE_RATE)

    def _encode(self, clips: list[tuple[str, bool, np.ndarray]], autocast: Any,
                pending: dict[bool, tuple[list[str], list[np.ndarray]]], done: int,
                audio_samples: int, source_of: dict[str, Any]) -> tuple[int, int]:  # fmt: skip
        """Encode one batch, add its rows to `pending` and write the shards that are full."""
        waveforms, lengths = pad_batch([clip for _, _, clip in clips])
        device = next(self.model.parameters()).device
        with torch.inference_mode(), autocast:
            pooled = self.model.pooled_layers(waveforms.to(device), lengths.to(device))
        pooled = pooled.float().cpu().numpy()  # (B, L + 1, H)
        if not np.isfinite(pooled).all():
            raise EmoknnError(
                "the encoder gives NaN or infinite features for "
                f"{source_of[clips[bad_rows(pooled)[0]][0]]}; nothing of it was cached"
            )
        for row, (key, is_view, _) in enumerate(clips):
            pending[is_view][0].append(key)
            pending[is_view][1].append(pooled[row])
        done += len(clips)
        audio_samples += int(lengths.sum())
        for is_view, (keys, rows) in pending.items():
            if len(keys) >= SHARD_ENTRIES:
                self._write_shard(keys, rows, is_view)
                pending[is_view] = ([], [])
        return done, audio_samples

    def _write_shard(self, keys: list[str], rows: list[np.ndarray], views: bool) -> None:
        stacked = np.stack(rows)  # (N, L + 1, H) float32
        # float16 halves the size of the views (training's inputs), where every value fits it.
        if views and np.abs(stacked).max() < FLOAT16_MAX:
            stacked = stacked.astype(np.float16)
        path = self.folder / f"shard-{time.time_ns()}-{os.getpid()}.npz"
        with atomic_path(path) as temporary, temporary.open("wb") as handle:
            np.savez(handle, keys=np.array(keys, dtype="U32"), features=stacked)
        self._scanned.add(path)
        self._loaded[path] = stacked
        for row, key in enumerate(keys):
            self._index.setdefault(key, (path, row))


def bad_rows(features: np.ndarray) -> np.ndarray:
    """Rows (first axis) of `features` holding a NaN or infinite value."""
    return np.flatnonzero(~np.isfinite(features.reshape(len(features), -1)).all(axis=1))


def _clip_batches(
    jobs: list[tuple[Utterance, list[tuple[str, int | None]]]],
    max_length: int,
    augmentation: Augmentation | None,
    seed: int,
    batch_size: int,
) -> Iterator[list[tuple[str, bool, np.ndarray]]]:
    """Batches of (entry key, is a view, clip), utterances in order of length so batches pad
    little. Durations come from the file headers; each file is decoded once for all its entries."""
    from emoknn.audio import audio_duration

    order = sorted(range(len(jobs)), key=lambda i: audio_duration(jobs[i][0].path))
    batch: list[tuple[str, bool, np.ndarray]] = []
    for index in order:
        utterance, entries = jobs[index]
        samples = load_audio(utterance.path)
        for key, view in entries:
            if view is None:
                clip = center_crop(samples, max_length)
            else:
                assert augmentation is not None
                rng = np.random.default_rng([seed, utterance_seed(utterance.id), view])
                clip = augmentation(random_crop(samples, max_length, rng), rng)
            batch.append((key, view is not None, clip))
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _prefetched(batches: Iterator[Any]) -> Iterator[Any]:
    """Prepare the next batch (decoding, augmentation: numpy, mostly outside the GIL) in a
    thread while the encoder runs on this one."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(next, batches, None)
        while True:
            batch = future.result()
            if batch is None:
                return
            future = executor.submit(next, batches, None)
            yield batch
