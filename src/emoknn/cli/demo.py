"""`emoknn demo`: the main job on a CPU, offline, from nothing: synthetic corpus → frozen encoder →
CE vs CE+SCL, ± kNN, and a classical baseline on every fold → table, comparisons, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emoknn.cli.common import check_output_folder, console, train_config
from emoknn.cli.training import run_crossval


def demo_command(
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("emoknn-demo"),
    encoder: Annotated[
        str, typer.Option(help="Pretrained encoder (hub name or folder); tiny if it cannot load")
    ] = "openai/whisper-base",
    folds: Annotated[str | None, typer.Option(help="Folds to run, e.g. 0,5 (default: all)")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per head")] = None,
) -> None:
    """The main job, on CPU: synthetic corpus → frozen encoder → CE vs CE+SCL, ± kNN, and a
    classical baseline on every fold → table, paired comparisons, report, a model to try."""
    import json
    import time

    from emoknn import demo
    from emoknn.corpora import generate_synthetic_corpus, is_synthetic_corpus

    start = time.perf_counter()
    check_output_folder(out, "--out")
    train_config("frozen", max_epochs=epochs)  # check the options before any work
    corpus = out / "corpus"
    if is_synthetic_corpus(corpus):
        console.print(f"Reusing the synthetic corpus in {corpus}")
    else:
        console.print(f"Generating the synthetic corpus in {corpus} ...")
        generate_synthetic_corpus(corpus, **demo.CORPUS_SETTINGS)
    choice = demo.choose_encoder(encoder)
    console.print(choice.line, highlight=False)
    config = train_config("frozen", encoder=choice.encoder, max_epochs=epochs,
                           cache_views=demo.CACHE_VIEWS, progress_bar=False,
                           **demo.HEAD_SETTINGS)  # fmt: skip
    crossval_dir = out / "crossval"
    run_crossval(corpus, "synthetic", "speaker", folds, "main", crossval_dir, config)
    results = json.loads((crossval_dir / "results.json").read_text())
    console.print(demo.verdict(results, choice.encoder), highlight=False)
    for line in demo.try_it(crossval_dir, results, corpus):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"Demo finished in {time.perf_counter() - start:.0f} s, encoder "
                  f"{choice.encoder}.", highlight=False)  # fmt: skip
