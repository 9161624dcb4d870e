"""A speech benchmark corpus from espeak-ng: real(istic) voices, prosody-styled emotion classes.

    python bench/speech_corpus.py [--out /work/bench-data/speech] [--seed 0]

Ten espeak-ng voices (language variant + voice variant) are the speakers, in five "sessions" of
two. Each speaker says twelve different sentences; four emotion classes (angry, happy, neutral,
sad) are prosody rules -- base pitch, pitch range, speaking rate, amplitude and word gap -- with
per-speaker offsets and per-utterance jitter wide enough that classes overlap (no single cue
separates them). 20 clips per class and speaker: 800 clips, 16 kHz mono WAV, written with a
`path,label,speaker,session` manifest that `emoknn crossval --corpus OUT/manifest.csv` reads.

Deterministic given the seed (and the espeak-ng/sox versions, recorded in `corpus.json`). The
corpus is written into a temporary sibling folder and renamed into place, then `READY` is created;
an existing complete corpus is left alone. A benchmark input only: never a product dependency,
not used by the tests or CI. Needs `espeak-ng` and `sox` on PATH.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# (espeak voice, pitch offset, rate offset): ten speakers, each a different accent/voice variant
VOICES: tuple[tuple[str, float, float], ...] = (
    ("en-us+m3", 0.0, 0.0),
    ("en-gb+f2", 8.0, -5.0),
    ("en-gb-scotland+m1", -6.0, 5.0),
    ("en-us+f4", 10.0, 8.0),
    ("en-029+m5", -3.0, -8.0),
    ("en-gb-x-rp+f1", 5.0, 0.0),
    ("en-us-nyc+m7", -8.0, 10.0),
    ("en-gb-x-gbclan+f3", 3.0, -10.0),
    ("en-gb-x-gbcwmd+m2", -4.0, 3.0),
    ("en-us+f5", 6.0, -3.0),
)

SENTENCES: tuple[str, ...] = (
    "The meeting has been moved to Thursday afternoon.",
    "I left the keys on the kitchen table this morning.",
    "We will need three more boxes before the end of the week.",
    "She told me the train would arrive at half past nine.",
    "Your package was delivered to the house next door.",
    "They are painting the bridge a different colour this year.",
    "Please put the blue folder back on the top shelf.",
    "The shop on the corner closes early on Sundays.",
    "He has been working on that report for two days.",
    "It is going to rain again tomorrow, according to the radio.",
    "My brother bought a new car last month.",
    "The children walked to school along the river.",
)

# class prototypes: espeak pitch (0-99), rate (words/min), amplitude (0-200), word gap (10 ms
# units), SSML pitch range (%); jitter standard deviations below make neighbouring classes overlap
STYLES: dict[str, dict[str, float]] = {
    "angry": {"pitch": 54, "rate": 195, "amplitude": 150, "gap": 0, "range": 135},
    "happy": {"pitch": 64, "rate": 182, "amplitude": 120, "gap": 0, "range": 165},
    "neutral": {"pitch": 50, "rate": 165, "amplitude": 100, "gap": 1, "range": 100},
    "sad": {"pitch": 42, "rate": 140, "amplitude": 80, "gap": 3, "range": 65},
}
JITTER: dict[str, float] = {
    "pitch": 7.0,
    "rate": 16.0,
    "amplitude": 22.0,
    "gap": 1.2,
    "range": 28.0,
}
CLIPS_PER_CLASS = 20
SAMPLE_RATE = 16_000


def _version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def _render(text: str, voice: str, params: dict[str, float], path: Path, scratch: Path) -> None:
    """Synthesize one clip with espeak-ng, then resample to 16 kHz mono 16-bit with sox."""
    raw = scratch / "raw.wav"
    ssml = f'<speak><prosody range="{params["range"]:.0f}%">{text}</prosody></speak>'
    subprocess.run(
        ["espeak-ng", "-m", "-v", voice, "-p", f"{params['pitch']:.0f}",
         "-s", f"{params['rate']:.0f}", "-a", f"{params['amplitude']:.0f}",
         "-g", f"{params['gap']:.0f}", "-w", str(raw), ssml],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip


def _limits(name: str, value: float) -> float:
    bounds = {"pitch": (0, 99), "rate": (80, 400), "amplitude": (20, 200), "gap": (0, 20),
              "range": (20, 250)}  # fmt: skip
    low, high = bounds[name]
    return float(min(max(value, low), high))


def generate(out: Path, seed: int) -> int:
    """Write the corpus into `out` (which must not exist); returns the number of clips."""
    rng = np.random.default_rng(seed)
    rows, details = [], []
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for index, (voice, pitch_offset, rate_offset) in enumerate(VOICES):
            speaker = f"spk{index:02d}"
            session = f"ses{index // 2 + 1}"
            (out / "wav" / speaker).mkdir(parents=True)
            for label, style in STYLES.items():
                for take in range(CLIPS_PER_CLASS):
                    sentence = (take + 3 * index) % len(SENTENCES)
                    params = {
                        name: _limits(name, style[name] + JITTER[name] * rng.standard_normal()
                                      + (pitch_offset if name == "pitch" else 0.0)
                                      + (rate_offset if name == "rate" else 0.0))
                        for name in STYLES[label]
                    }  # fmt: skip
                    relative = Path("wav") / speaker / f"{speaker}_{label}_{take:02d}.wav"
                    _render(SENTENCES[sentence], voice, params, out / relative, scratch)
                    rows.append([relative.as_posix(), label, speaker, session])
                    details.append({"path": relative.as_posix(), "voice": voice,
                                    "sentence": sentence, **params})  # fmt: skip
            print(f"  {speaker} ({voice}) done", flush=True)
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker", "session"])
        writer.writerows(rows)
    info = {
        "seed": seed, "voices": [v for v, _, _ in VOICES], "sentences": list(SENTENCES),
        "styles": STYLES, "jitter": JITTER, "clips_per_class": CLIPS_PER_CLASS,
        "sample_rate": SAMPLE_RATE, "espeak_ng": _version("espeak-ng"), "sox": _version("sox"),
        "clips": details,
    }  # fmt: skip
    (out / "corpus.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/work/bench-data/speech"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool}: not found on PATH; this benchmark corpus needs espeak-ng and sox")
    out: Path = args.out
    if (out / "READY").is_file():
        print(f"{out}: complete corpus already there (READY); left alone")
        return
    if out.exists():
        sys.exit(f"{out}: exists without READY (an interrupted run?); remove it and run again")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.rmdir()
        count = generate(staging, args.seed)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (out / "READY").write_text(f"{count} clips, seed {args.seed}\n", encoding="utf-8")
    print(f"{out}: {count} clips in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
