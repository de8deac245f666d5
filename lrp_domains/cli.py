"""The ``lrp-domains`` command."""

from __future__ import annotations

import os
from pathlib import Path

import typer

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise): on a busy or
# small machine spinning threads made one explained sentence take seconds instead of milliseconds.
# Set before torch is imported (commands import it when they run).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(help="Layer-wise Relevance Propagation for text and biology.", no_args_is_help=True)


def _add_bench_commands() -> None:
    from lrp_domains.commands.bench import app as bench_app

    app.add_typer(bench_app, name="bench")


def _add_text_commands() -> None:
    try:
        from lrp_domains.commands.text import app as text_app
    except ImportError:  # the text extra is not installed
        return
    app.add_typer(text_app, name="text")


def _add_bio_commands() -> None:
    try:
        from lrp_domains.commands.bio import app as bio_app
    except ImportError:  # the bio extra is not installed
        return
    app.add_typer(bio_app, name="bio")


def _add_run_commands() -> None:
    from lrp_domains.commands.steps import app as run_app  # the run group, with the steps on finished runs

    app.add_typer(run_app, name="run")


_add_bench_commands()
_add_text_commands()
_add_bio_commands()
_add_run_commands()


@app.command()
def demo(
    out: Path = typer.Option(Path("lrp-demo"), help="Output folder (index.html and the three reports)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    core: bool = typer.Option(False, "--core", help="Only the core example: a small MLP, tables in the terminal."),
) -> None:
    """The demo: text, sequences and genes explained by the default models, in one folder to open."""
    if core:
        from lrp_domains.core_example import run_core_demo

        run_core_demo(progress=progress)
        return
    from lrp_domains.demo import run_demo

    run_demo(out, progress=progress)


@app.command()
def composites() -> None:
    """List the named composites."""
    from lrp_domains.core.composites import get, names

    for name in names():
        doc = "needs low=, high=" if name == "epsilon-gamma-box" else repr(get(name).rules)
        typer.echo(f"{name}: {doc}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
        code: object = 0
    except SystemExit as done:
        code = done.code
    if code in (0, None) and _may_exit_fast():
        _exit_fast()
    raise SystemExit(code)


def _may_exit_fast() -> bool:
    """Whether a finished command may skip the interpreter's teardown: torch was loaded (tearing
    down torch and transformers takes about a second of a cold start: 0.8-1.0 s measured here,
    where explaining a sentence takes 0.03 s), nothing traces or profiles the process (a profiler
    or coverage writes what it measured after ``main`` returns), no other thread that a normal exit
    would wait for is running, and ``LRP_DOMAINS_FULL_EXIT`` is not set."""
    import sys
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    return (
        not others  # a normal exit waits for them
        and "torch" in sys.modules
        and sys.gettrace() is None
        and sys.getprofile() is None
        and not os.environ.get("LRP_DOMAINS_FULL_EXIT")
    )


def _exit_fast() -> None:
    """End a successful command without the interpreter's teardown: the exit handlers run (logging,
    temporary folders, worker processes) and the standard streams are flushed, as at a normal exit;
    only freeing every object and module one by one is skipped. Every file a command writes is
    closed by then (written through ``with`` blocks, folders' locks given back by their own)."""
    import atexit
    import sys

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(0)


if __name__ == "__main__":
    main()
