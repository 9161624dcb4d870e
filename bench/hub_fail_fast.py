"""How long a hub encoder name takes to fail when the Hub cannot be reached, and what it says.

python bench/hub_fail_fast.py [--name facebook/wav2vec2-base]

Baseline: what emoknn did before `emoknn.hub` — `AutoFeatureExtractor.from_pretrained(name)` (for
the normalisation default) and `AutoModel.from_pretrained(name)`, each retried by huggingface_hub
with back-off before it gives up. emoknn: `default_normalization` + `load_encoder`, which ask the
Hub once with a short timeout and stop with the offline hint. Both in this process, same network.
Meaningful only where the Hub is unreachable (here: no DNS); with network it measures a download.
"""

from __future__ import annotations

import argparse
import contextlib
import time


def timed(action) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        action()
        outcome = "loaded"
    except Exception as error:  # the outcome is what is being measured
        outcome = f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"
    return time.perf_counter() - start, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="facebook/wav2vec2-base")
    args = parser.parse_args()

    from transformers import AutoFeatureExtractor, AutoModel

    from emoknn.model import ModelConfig, default_normalization, load_encoder
    from emoknn.sources import hub_unreachable

    def baseline() -> None:
        with contextlib.suppress(OSError):  # the old default_normalization fell back to True
            AutoFeatureExtractor.from_pretrained(args.name)
        AutoModel.from_pretrained(args.name, layerdrop=0.0)

    def emoknn() -> None:
        hub_unreachable.cache_clear()
        default_normalization(args.name)
        load_encoder(ModelConfig(encoder=args.name))

    emoknn_seconds, emoknn_outcome = timed(emoknn)
    baseline_seconds, baseline_outcome = timed(baseline)
    print(f"{'':>28} {'seconds':>8}  outcome")
    print(f"{'from_pretrained (baseline)':>28} {baseline_seconds:8.1f}  {baseline_outcome}")
    print(f"{'emoknn load_encoder':>28} {emoknn_seconds:8.1f}  {emoknn_outcome}")
    print(f"speed-up to the error: {baseline_seconds / max(emoknn_seconds, 1e-9):.0f}x")


if __name__ == "__main__":
    main()
