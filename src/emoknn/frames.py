"""An encoder split in two at one layer: its lower frames computed once, its top run in training.

Partial fine-tuning (`emoknn.partial`) trains only the top N transformer layers. Everything below
them is frozen, so its output — the frames of hidden-state entry s (0 = the input to the first
transformer layer, l = the output of layer l) — is the same every epoch, and is computed once per
(utterance, view) into this cache:

    waveform ─front end, layers 1 … s (frozen)─▶ frames_s (F, H), cached in float16
        ─layers s + 1 … c (tuned)─▶ final norm (where the encoder has one) ─▶ last hidden state

`lower_frames` runs the frozen part and stops after layer s (a forward hook captures that layer's
output and ends the pass: nothing above it is computed). `upper_forward` runs the layers above s
and the final norm with the attention mask the encoder itself builds, so that on exact frames it
gives exactly what the whole encoder gives (`tests/test_partial.py` checks both backends).

    CACHE/frames-<encoder key>/       one folder per encoder weights + crop + normalisation
      encoder.json                    what the key covers
      shard-<time>-<pid>.npz          keys (N,), offsets (N + 1,), frames (Σ F_i, H) float16

An entry key is the feature cache's (`emoknn.features`: the audio file's content hash, and for a
view its utterance, seed, index and augmentation) plus the entry s, so frames of another layer,
another crop or other views are never served for these. Frames are stored in float16 (half the
size; relative error ≤ 2^-11 against the live float32 frames, which prediction uses).
A fill says how much it will write before it starts, and refuses in one line when that exceeds
its budget (`budget_bytes`).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emoknn.audio import SAMPLE_RATE, audio_duration, max_samples
from emoknn.corpora.utterance import Utterance
from emoknn.data import pad_batch
from emoknn.errors import ConfigError, EmoknnError
from emoknn.features import (
    ContentHashes,
    ViewSpec,
    _clip_batches,
    _digest,
    _prefetched,
    fill_threads,
    index_shard_keys,
    torch_threads,
)
from emoknn.files import atomic_path, check_writable_folder, write_json_atomic
from emoknn.knn import module_fingerprint
from emoknn.model import EmotionModel, ModelOutput, final_norm, transformer_layers

FORMAT_VERSION = 1
SHARD_ENTRIES = 256  # entries per shard: what an interrupted fill can lose at most
FRAMES_PER_SECOND = 50  # every supported encoder gives one frame per 20 ms (size estimates)
# Relative positions are computed in WavLM's first layer and handed up the stack: its top layers
# cannot start from cached frames alone.
UNSUPPORTED = ("wavlm",)


class _CapturedError(Exception):
    """Ends a forward pass once the frames wanted are captured."""


def check_splittable(model: EmotionModel) -> None:
    kind = model.encoder.config.model_type
    if kind in UNSUPPORTED:
        raise ConfigError(f"partial fine-tuning does not support {kind} encoders (its relative "
                          "position bias is computed in the first layer); use Whisper or the "
                          "wav2vec2 family", setting="tune_layers")  # fmt: skip


def frame_mask_of(model: EmotionModel, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, F) True on the frames computed from real samples."""
    counts = model.frame_lengths(lengths)
    return torch.arange(num_frames, device=lengths.device)[None] < counts[:, None]


def lower_frames(
    model: EmotionModel, waveforms: torch.Tensor, lengths: torch.Tensor, entries: Sequence[int]
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Hidden-state entries `entries` (each (B, F, H)) of zero-padded waveforms, with the frame
    mask (B, F); the pass stops after the highest entry's layer."""
    if not model.is_whisper and model._per_item_encoder and len(lengths) > 1:
        return _per_item(model, waveforms, lengths, entries)
    layers = transformer_layers(model)
    wanted = sorted(set(entries))
    if not wanted or wanted[0] < 0 or wanted[-1] >= len(layers):
        raise ConfigError(f"entries must lie in 0 … {len(layers) - 1}, got {list(entries)}")
    captured: dict[int, torch.Tensor] = {}

    def keep(entry: int, value: torch.Tensor) -> None:
        captured[entry] = value[0] if isinstance(value, tuple) else value
        if entry == wanted[-1]:
            raise _CapturedError

    handles = []
    if 0 in wanted:  # the input of layer 1
        handles.append(layers[0].register_forward_pre_hook(lambda _m, args: keep(0, args[0])))
    for entry in wanted:
        if entry > 0:
            handles.append(layers[entry - 1].register_forward_hook(
                lambda _m, _a, out, entry=entry: keep(entry, out)))  # fmt: skip
    try:
        model.hidden_states(waveforms, lengths, all_layers=False)
    except _CapturedError:
        pass
    finally:
        for handle in handles:
            handle.remove()
    frames = captured[wanted[-1]]
    return captured, frame_mask_of(model, lengths, frames.shape[1])


def _per_item(model, waveforms, lengths, entries):
    """data2vec-audio encodes one utterance at a time (`emoknn.model`): so does this."""
    items = [lower_frames(model, waveforms[i : i + 1, : int(n)], lengths[i : i + 1], entries)
             for i, n in enumerate(lengths)]  # fmt: skip
    num_frames = max(mask.shape[1] for _, mask in items)
    out = {e: torch.cat([F.pad(c[e], (0, 0, 0, num_frames - c[e].shape[1])) for c, _ in items])
           for e in items[0][0]}  # fmt: skip
    mask = torch.cat([F.pad(m, (0, num_frames - m.shape[1])) for _, m in items])
    return out, mask


def upper_hidden(
    model: EmotionModel, frames: torch.Tensor, frame_mask: torch.Tensor, entry: int
) -> torch.Tensor:
    """The last hidden state (B, F, H) from the frames of entry `entry` (B, F, H): the layers
    above it and the final norm, as the encoder runs them."""
    hidden = frames
    layers = transformer_layers(model)[entry:]
    if model.is_whisper:  # additive key mask, as emoknn.whisper.WhisperBackbone builds it
        mask = torch.zeros(frame_mask.shape, dtype=hidden.dtype, device=hidden.device)
        mask = mask.masked_fill(~frame_mask, torch.finfo(hidden.dtype).min)[:, None, None, :]
        for layer in layers:
            hidden = layer(hidden, mask)
    else:  # the mask Hugging Face's wav2vec2-family encoders build for their layers
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(
            config=model.encoder.encoder.config, inputs_embeds=hidden, attention_mask=frame_mask
        )
        for layer in layers:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
    norm = final_norm(model)
    return norm(hidden) if norm is not None else hidden


def upper_forward(
    model: EmotionModel, frames: torch.Tensor, frame_mask: torch.Tensor, entry: int
) -> ModelOutput:
    """`model.forward` from cached frames of entry `entry`: upper layers, masked mean, head."""
    last = upper_hidden(model, frames, frame_mask, entry)
    return model.head(model._pool(last.float(), frame_mask)[:, None])  # (B, 1, P)


def pad_frames(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of different lengths (F_i, H) → zero-padded (B, F, H) float32 and mask (B, F)."""
    counts = torch.tensor([len(r) for r in rows])
    batch = torch.zeros(len(rows), int(counts.max()), rows[0].shape[1])
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row.float()
    return batch, torch.arange(batch.shape[1])[None] < counts[:, None]


class FrameCache:
    """Lower-layer frames of utterances and their views, on disk (module docstring). `model` is
    the pretrained encoder's model: its lower layers are the frozen part."""

    def __init__(self, root: str | os.PathLike, model: EmotionModel, max_seconds: float) -> None:
        check_splittable(model)
        self.root = Path(root)
        self.model = model
        self.max_length = max_samples(max_seconds)
        self.hidden_size = model.hidden_size
        info = {
            "format": FORMAT_VERSION,
            "kind": "frames",
            "encoder": model.config.encoder,
            "encoder_config": model.config.encoder_config,
            "weights_sha256": module_fingerprint(model.encoder),
            "normalize_waveforms": model.config.normalize_waveforms,
            "crop_samples": self.max_length,
        }
        self.folder = self.root / f"frames-{_digest(info)[:20]}"
        self._info = info
        self._index: dict[str, tuple[Path, int]] = {}
        self._loaded: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        self._scanned: set[Path] = set()
        self.hashes = ContentHashes(self.root)

    # ---- keys ---------------------------------------------------------------------------------

    def keys(self, utterances: Sequence[Utterance], entry: int, spec: ViewSpec | None = None,
             view: int | None = None) -> list[str]:  # fmt: skip
        """Entry keys of the originals (view None) or of view `view` of `spec`."""
        audio = [{"sha256": self.hashes.of(u.path)} for u in utterances]
        self.hashes.save()
        if view is None:
            return [_digest({"audio": a, "view": None, "entry": entry})[:32] for a in audio]
        assert spec is not None
        identity = spec.identity()
        return [_digest({"audio": a, "entry": entry, "view": {
                    "utterance": u.id, "seed": spec.seed, "index": view,
                    "augmentation": identity}})[:32]
                for a, u in zip(audio, utterances, strict=True)]  # fmt: skip

    # ---- reading ------------------------------------------------------------------------------

    def _scan(self) -> None:
        if not self.folder.is_dir():
            return
        index_shard_keys(sorted(self.folder.glob("shard-*.npz")), self._scanned, self._index)

    def missing(self, keys: Sequence[str]) -> list[str]:
        self._scan()
        return [key for key in keys if key not in self._index]

    def _shard(self, shard: Path) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._loaded:
            try:
                with np.load(shard, allow_pickle=False) as stored:
                    offsets, frames = stored["offsets"], stored["frames"]
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise EmoknnError(f"{shard}: a damaged frame-cache shard ({type(error).__name__});"
                                  " delete it (its entries are computed again)") from error
            if frames.ndim != 2 or frames.shape[1] != self.hidden_size:
                raise EmoknnError(f"{shard}: frames of width {frames.shape[1:]}, expected "
                                  f"{self.hidden_size}; delete it")  # fmt: skip
            self._loaded[shard] = (offsets, frames)
        return self._loaded[shard]

    def gather(self, keys: Sequence[str]) -> list[torch.Tensor]:
        """The cached frames (F_i, H) float16 of every key (all must be cached)."""
        self._scan()
        out = []
        for key in keys:
            if key not in self._index:
                raise EmoknnError(f"frame cache {self.folder}: entry {key} is missing; fill first")
            shard, row = self._index[key]
            offsets, frames = self._shard(shard)
            out.append(torch.from_numpy(frames[offsets[row] : offsets[row + 1]]))
        return out

    def size_bytes(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    # ---- filling ------------------------------------------------------------------------------

    def _wanted(self, utterances: Sequence[Utterance], entries: Sequence[int],
                spec: ViewSpec | None, originals: bool) -> list[tuple[Any, ...]]:  # fmt: skip
        """(utterance, view or None, entry, key) of every entry asked for."""
        wanted = []
        for entry in entries:
            if originals:
                keys = self.keys(utterances, entry)
                wanted += [(u, None, entry, k) for u, k in zip(utterances, keys, strict=True)]
            for view in range(spec.views if spec is not None else 0):
                keys = self.keys(utterances, entry, spec, view)
                wanted += [(u, view, entry, k) for u, k in zip(utterances, keys, strict=True)]
        return wanted

    def estimate_bytes(self, utterances: Sequence[Utterance], entries: Sequence[int],
                       spec: ViewSpec | None = None, originals: bool = True) -> int:  # fmt: skip
        """Bytes the entries not yet cached will take: frames of the (cropped) duration from the
        file header × H × 2 (float16)."""
        wanted = self._wanted(utterances, entries, spec, originals)
        missing = set(self.missing([key for *_, key in wanted]))
        crop = self.max_length / SAMPLE_RATE
        seconds: dict[str, float] = {}
        total = 0
        for utterance, _, _, key in wanted:
            if key in missing:
                if utterance.path not in seconds:
                    seconds[utterance.path] = min(audio_duration(utterance.path), crop)
                total += int(seconds[utterance.path] * FRAMES_PER_SECOND + 1) * self.hidden_size * 2
        return total

    def fill(
        self,
        utterances: Sequence[Utterance],
        entries: Sequence[int],
        spec: ViewSpec | None = None,
        originals: bool = True,
        budget_bytes: float | None = None,
        log: Callable[[str], None] | None = None,
        batch_size: int = 8,
    ) -> int:
        """Compute and store every entry not yet cached (originals unless `originals` is False;
        K views of `spec`); each clip is encoded once for all `entries`. Says the size first
        (`log`), refuses over `budget_bytes`. Returns the number of entries computed."""
        wanted = self._wanted(utterances, entries, spec, originals)
        missing = set(self.missing([key for *_, key in wanted]))
        if not missing:
            return 0
        size = self.estimate_bytes(utterances, entries, spec, originals)
        if budget_bytes is not None and size > budget_bytes:
            raise ConfigError(
                f"the frame cache fill would write about {size / 2**30:.2f} GB ({len(missing)} "
                f"entries) in {self.folder}, over the budget of {budget_bytes / 2**30:.2f} GB; "
                "raise --frame-cache-gb, or use fewer views or a shorter crop",
                setting="frame_cache_gb",
            )
        if log is not None:
            log(f"Frame cache {self.folder}: {len(missing)} entries to compute, about "
                f"{size / 2**20:.0f} MB in float16")  # fmt: skip
        check_writable_folder(self.folder, "the frame cache folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "encoder.json").is_file():
            write_json_atomic(self._info, self.folder / "encoder.json")
        # One job per (utterance, view): its clip is computed once, for every entry.
        clips: dict[tuple[str, int | None], dict[int, str]] = {}
        by_id = {}
        for utterance, view, entry, key in wanted:
            if key in missing:
                clips.setdefault((utterance.id, view), {})[entry] = key
                by_id[utterance.id] = utterance
        jobs: dict[str, tuple[Utterance, list[tuple[str, int | None]]]] = {}
        for (uid, view) in clips:
            jobs.setdefault(uid, (by_id[uid], []))[1].append((json.dumps([uid, view]), view))
        augmentation = spec.augmentation if spec is not None else None
        seed = spec.seed if spec is not None else 0
        start = time.perf_counter()
        pending: list[tuple[str, np.ndarray]] = []
        computed = 0
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch_threads(fill_threads()), torch.inference_mode():
                batches = _clip_batches(list(jobs.values()), self.max_length, augmentation, seed,
                                        batch_size)  # fmt: skip
                for batch in _prefetched(batches):
                    waveforms, lengths = pad_batch([clip for *_, clip in batch])
                    frames, mask = lower_frames(model, waveforms, lengths, sorted(entries))
                    counts = mask.sum(dim=1).tolist()
                    for row, (job, _, _) in enumerate(batch):
                        uid, view = json.loads(job)
                        for entry, key in clips[(uid, view)].items():
                            values = frames[entry][row, : counts[row]].float().numpy()
                            if not np.isfinite(values).all():
                                raise EmoknnError(f"{by_id[uid].path}: the encoder gives NaN "
                                                  "or infinite frames; none were cached")
                            pending.append((key, values.astype(np.float16)))
                            computed += 1
                    if len(pending) >= SHARD_ENTRIES:
                        self._write_shard(pending)
                        pending = []
            if pending:
                self._write_shard(pending)
        finally:
            model.train(was_training)
        if log is not None:
            log(f"Frame cache: {computed} entries computed in {time.perf_counter() - start:.0f} s "
                f"({self.size_bytes() / 2**20:.0f} MB on disk)")  # fmt: skip
        return computed

    def _write_shard(self, rows: list[tuple[str, np.ndarray]]) -> None:
        offsets = np.cumsum([0] + [len(frames) for _, frames in rows]).astype(np.int64)
        frames = np.concatenate([frames for _, frames in rows])
        path = self.folder / f"shard-{time.time_ns()}-{os.getpid()}.npz"
        with atomic_path(path) as temporary, temporary.open("wb") as handle:
            np.savez(handle, keys=np.array([k for k, _ in rows], dtype="U32"), offsets=offsets,
                     frames=frames)  # fmt: skip
        self._scanned.add(path)
        self._loaded[path] = (offsets, frames)
        for row, (key, _) in enumerate(rows):
            self._index.setdefault(key, (path, row))

