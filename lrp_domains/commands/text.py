"""``lrp-domains text ...``: explain a text or a file of texts from the command line."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from lrp_domains.commands.common import one_line_errors, parse_target
from lrp_domains.errors import InputError

app = typer.Typer(help="Explain text classifiers and language models (AttnLRP, CP-LRP).", no_args_is_help=True)


class Level(str, Enum):
    word = "word"
    token = "token"


class Format(str, Enum):
    terminal = "terminal"
    html = "html"
    csv = "csv"
    json = "json"


def _explainer(model: str | None, composite: str):
    from lrp_domains.text import TextExplainer

    return TextExplainer.from_options(model=model, composite=composite)


def render_terminal(result, level: Level) -> None:
    """Print the text with each word (or token) on a red (positive) / blue (negative) background."""
    from rich.console import Console
    from rich.text import Text

    values = result.word_relevance if level is Level.word else result.token_relevance
    spans = result.word_spans if level is Level.word else result.token_spans
    scale = float(values.abs().max()) if len(values) else 0.0
    line, cursor = Text(), 0
    for (start, end), value in zip(spans, values.tolist()):
        if end <= start:
            continue
        line.append(result.text[cursor:start])
        fade = 255 - (0 if scale == 0 else int(200 * min(abs(value) / scale, 1.0)))
        color = f"rgb(255,{fade},{fade})" if value >= 0 else f"rgb({fade},{fade},255)"
        line.append(result.text[start:end], style=f"black on {color}")
        cursor = end
    line.append(result.text[cursor:])
    console = Console()
    console.soft_wrap = not console.is_terminal  # piped: whole lines, never wrapped at 80 columns
    probabilities = ", ".join(f"{k} {v:.3f}" for k, v in result.probabilities.items())
    console.print(
        f"prediction: [bold]{result.prediction}[/bold] ({probabilities}); explained: {result.target}; "
        f"{result.composite}"
    )
    console.print(line)
    ranked = sorted(
        zip(result.words if level is Level.word else result.tokens, values.tolist()), key=lambda item: -abs(item[1])
    )[:8]
    console.print("most relevant: " + ", ".join(f"{w} {v:+.3f}" for w, v in ranked))
    if result.ledger_rows is not None:
        from lrp_domains.report.ledger import sentence, text_shares

        where = text_shares([result])
        assert where is not None
        console.print(f"where the logit ({result.explained:.4f}) went: {sentence(where[0], 'the logit')}", style="dim")
    else:
        console.print(
            f"delta {result.delta:+.4f} (explained {result.explained:.4f}; special tokens "
            f"{result.special_relevance:+.4f})",
            style="dim",
        )


@app.command("explain")
def explain_command(
    text: str = typer.Argument(..., help="The text to explain."),
    model: str = typer.Option(None, help="A model folder or hub name (default: the bundled sentiment model)."),
    composite: str = typer.Option("attnlrp", help="attnlrp or cp-lrp."),
    target: str = typer.Option(
        None, help="Label name or class index, or a contrast 'positive vs negative' (default: the prediction)."
    ),
    level: Level = typer.Option(Level.word, help="Relevance per word or per token."),
    format: Format = typer.Option(Format.terminal, "--format", help="Output format."),
    out: Path = typer.Option(None, help="Write to this file instead of standard output."),
) -> None:
    """Explain one text: coloured words in the terminal, or HTML, CSV, JSON."""
    with one_line_errors():
        explainer = _explainer(model, composite)
        result = explainer.explain(text, target=parse_target(target), ledger=True)
    if format is Format.terminal and out is None:
        render_terminal(result, level)
        return
    if format is Format.html or (format is Format.terminal and out is not None):
        from lrp_domains.report.text import text_page  # the reports (jinja2, pandas) only for a page

        payload = text_page(result)
    elif format is Format.csv:
        payload = result.to_frame(level.value).to_csv(index=False)
    else:
        payload = json.dumps(result.to_dict(), indent=1)
    if out is None:
        typer.echo(payload)
    else:
        from lrp_domains.files.writing import atomic_write

        with one_line_errors():
            if out.is_dir():
                raise InputError(f"--out {out} is a folder; give a file name")
            atomic_write(out, payload)
        typer.echo(f"wrote {out}")


@app.command("explain-file")
def explain_file_command(
    path: Path = typer.Argument(..., help="A .csv, .tsv, .txt (one text per line) or .jsonl file."),
    out: Path = typer.Option(..., help="Output folder (the tables and pages; the run in OUT/run)."),
    column: str = typer.Option("text", help="The text column (.csv/.tsv/.jsonl)."),
    model: str = typer.Option(None, help="A model folder or hub name (default: the bundled sentiment model)."),
    composite: str = typer.Option("attnlrp", help="attnlrp or cp-lrp."),
    target: str = typer.Option(
        None, help="Label name or class index, or a contrast 'positive vs negative' (default: each text's prediction)."
    ),
    batch_size: int = typer.Option(16, help="Texts per forward/backward pass."),
    shard_size: int = typer.Option(1000, help="Texts per shard of the run (OUT/run)."),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Reuse the finished shards of OUT/run when "
        "input and settings are the same (a run of others "
        "there is replaced); --no-resume: always replace.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Explain every text of a file: token tables (CSV, Parquet), per-text HTML, a corpus summary:
    a run into OUT/run (as `lrp-domains run text`, the same rows), then its tables into OUT."""
    from lrp_domains.report.corpus import explain_file

    with one_line_errors():
        explainer = _explainer(model, composite)
        paths = explain_file(
            explainer,
            path,
            out,
            column=column,
            target=parse_target(target),
            batch_size=batch_size,
            progress=progress,
            shard_size=shard_size,
            resume=resume,
        )
    for name, written in paths.items():
        typer.echo(f"{name}: {written}")
