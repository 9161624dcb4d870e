"""The `emoknn` command line: a thin layer over the public API.

Errors a user can fix (`EmoknnError`) print as one line on stderr and exit with status 1; usage
mistakes exit with 2 (typer). Every option is checked (`emoknn.checks`) before a command does any
work, and messages name the option as typed (`--workers`). Heavy imports (torch, transformers)
happen inside the commands that need them, so `emoknn --help` stays fast.

One module per command group, registered below in the order `emoknn --help` lists them:

    corpus.py     corpus summarize | synth, augment preview
    training.py   train, crossval, report
    evaluation.py evaluate, crosscorpus
    datastore.py  datastore build | add | inspect
    demo.py       demo
    predict.py    predict, serve, export
    speakers.py   enrol, and the speaker statistics predict takes (speaker-normalised models)
    models.py     convert, import, adapt, push, pack
    options.py    the options several commands take, each declared once
    common.py     consoles and the checks commands share

Nothing in the package imports the command line (tests/test_imports.py).
"""

from __future__ import annotations

import typer
from rich.text import Text

from emoknn.cli import corpus, datastore, demo, evaluation, models, predict, speakers, training
from emoknn.cli.common import error_console, tidy_help
from emoknn.errors import EmoknnError

app = typer.Typer(
    name="emoknn",
    help="Speech emotion recognition: SupCon fine-tuning + kNN inference (Interspeech 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(corpus.corpus_app, name="corpus")
app.add_typer(datastore.datastore_app, name="datastore")
app.add_typer(corpus.augment_app, name="augment")
app.command("train")(training.train_command)
app.command("crossval")(training.crossval_command)
app.command("report")(training.report_command)
app.command("evaluate")(evaluation.evaluate_command)
app.command("crosscorpus")(evaluation.crosscorpus_command)
app.command("demo")(demo.demo_command)
app.command("predict")(predict.predict_command)
app.command("enrol")(speakers.enrol_command)
app.command("convert")(models.convert_command)
app.command("import")(models.import_command)
app.command("adapt")(models.adapt_command)
app.command("push")(models.push_command)
app.command("pack")(models.pack_command)
app.command("serve")(predict.serve_command)
app.command("export")(predict.export_command)
tidy_help(app)


def _quiet_third_party_noise() -> None:
    """Hide advertising and upstream deprecation chatter that says nothing about the user's run."""
    import logging
    import warnings

    class DropTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Tip:" not in record.getMessage()

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(DropTips())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `emoknn` console script and `python -m emoknn`."""
    _quiet_third_party_noise()
    try:
        app(args=argv, prog_name="emoknn")
    except EmoknnError as error:
        error_console.print(Text.assemble(("error:", "bold red"), " ", str(error)))
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        error_console.print("interrupted")
        raise SystemExit(130) from None
