"""`emoknn demo`: the main job on a CPU, offline, from nothing: synthetic corpus → frozen encoder →
CE vs CE+SCL, ± kNN, the encoder probe and a classical baseline on every fold → table,
comparisons, report. `--corpus NAME|PATH` runs it on a real corpus instead (downloaded where the
network allows)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emoknn.cli.common import check_output_folder, console, train_config
from emoknn.cli.corpus import accept_licence, download_progress
from emoknn.cli.options import FeatureCache
from emoknn.cli.training import run_crossval


def demo_command(
    out: Annotated[Path, typer.Option(help="Output folder")] = Path("emoknn-demo"),
    encoder: Annotated[
        str, typer.Option(help="Pretrained encoder (hub name or folder); tiny if it cannot load")
    ] = "openai/whisper-base",
    folds: Annotated[str | None, typer.Option(help="Folds to run, e.g. 0,5 (default: all)")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per head")] = None,
    corpus: Annotated[
        str | None,
        typer.Option(
            help="A real corpus instead of the synthetic one: a folder or manifest, or a "
            "downloadable NAME (emoknn corpus list), fetched into OUT/corpora/NAME"
        ),
    ] = None,
    accept_licence_: Annotated[
        bool, typer.Option("--accept-licence", help="Accept the --corpus NAME's licence terms")
    ] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="Mirror for the --corpus NAME download")
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", help="Kind of a --corpus folder (see `emoknn corpus list`)")
    ] = "auto",
    feature_cache: FeatureCache = None,
) -> None:
    """The main job, on CPU: synthetic corpus → frozen encoder → CE vs CE+SCL, ± kNN, the
    encoder probe and a classical baseline on every fold → table, paired comparisons, report, a
    model to try. --corpus emodb (any downloadable NAME) downloads a real corpus where its site
    answers; --corpus PATH runs on a laid-out copy."""
    import json
    import time

    from emoknn import demo
    from emoknn.checks import check_choice
    from emoknn.corpora import CORPUS_KINDS, generate_synthetic_corpus, is_synthetic_corpus

    start = time.perf_counter()
    check_output_folder(out, "--out")
    train_config("frozen", max_epochs=epochs)  # check the options before any work
    check_choice(kind, "--kind", CORPUS_KINDS)
    if corpus is not None:
        real = _real_corpus(corpus, out, accept_licence_, url, kind)
        console.print(real.line, highlight=False)
        corpus_path, kind, scheme = real.path, real.kind, real.scheme
    else:
        corpus_path, kind, scheme = out / "corpus", "synthetic", "speaker"
        if is_synthetic_corpus(corpus_path):
            console.print(f"Reusing the synthetic corpus in {corpus_path}")
        else:
            console.print(f"Generating the synthetic corpus in {corpus_path} ...")
            generate_synthetic_corpus(corpus_path, **demo.CORPUS_SETTINGS)
    choice = demo.choose_encoder(encoder)
    console.print(choice.line, highlight=False)
    config = train_config("frozen", encoder=choice.encoder, max_epochs=epochs, progress_bar=False,
                          feature_cache=None if feature_cache is None else str(feature_cache))
    crossval_dir = out / "crossval"
    run_crossval(corpus_path, kind, scheme, folds, "main", crossval_dir, config)
    results = json.loads((crossval_dir / "results.json").read_text())
    for line in demo.reference_rows(results):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(demo.verdict(results, choice.encoder), highlight=False)
    for line in demo.try_it(crossval_dir, results, corpus_path, kind):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"Demo finished in {time.perf_counter() - start:.0f} s, encoder "
                  f"{choice.encoder}.", highlight=False)  # fmt: skip


def _real_corpus(spec: str, out: Path, accepted: bool, url: str | None, kind: str):
    """--corpus: a folder as it is, or a downloadable NAME (its licence accepted first)."""
    from emoknn import demo
    from emoknn.corpora import CORPORA

    info = CORPORA.get(spec)
    if info is not None and not Path(spec).exists() and info.access == "download":
        accept_licence(info, accepted)
        accepted = True
    with download_progress() as progress:
        return demo.demo_corpus(spec, out, accepted, progress=progress, url=url, kind=kind)
