"""Every emoknn benchmark in one run, each printing its figures beside its baseline.

python bench/run_all.py            # full (about 10 minutes on 2 CPU cores, plus Whisper's)
python bench/run_all.py --quick    # smaller sizes, no base-size encoder (about 2 minutes)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    quick_predict = ["--sizes", "tiny", "--clips", "60", "--rounds", "3", "--minutes", "30"]
    runs = [
        ["predict_throughput.py"] + (quick_predict if quick else []),
        ["training_data.py"] + (["--skip-base", "--clips", "16"] if quick else []),
        ["augment_throughput.py"] + (["--clips", "10"] if quick else []),
        ["knn_tuning.py"] + (["--repeats", "1"] if quick else []),
        ["feature_cache.py"]
        + (["--clips", "16", "--rounds", "1", "--utterances", "80"] if quick else []),
        # Skipped (with a line saying so) where the real whisper-base folder is absent.
        ["whisper_throughput.py"]
        + (["--clips", "24", "--rounds", "1", "--finetune-steps", "0"] if quick else []),
    ]  # fmt: skip
    for script, *options in runs:
        print(f"\n$ python bench/{script} {' '.join(options)}".rstrip(), flush=True)
        subprocess.run([sys.executable, str(HERE / script), *options], check=True)


if __name__ == "__main__":
    main()
