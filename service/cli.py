"""The `notesrag` command: thin over the `index` library, the service and the evaluation."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from index.config import IndexConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Question answering over your notes.")

IndexDir = Annotated[Path | None, typer.Option("--index-dir", help="snapshot directory [default: NOTESRAG_INDEX_DIR or var/index]")]


def _index_dir(value: Path | None) -> Path:
    from service.settings import get_settings

    return value or get_settings().index_dir


def _config(chunk_sizes: str | None = None) -> IndexConfig:
    from service.settings import get_settings

    return get_settings().index_config(chunk_sizes)


class Engine(enum.StrEnum):
    asyncio = "asyncio"
    ray = "ray"


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders of notes")],
    index_dir: IndexDir = None,
    chunk_sizes: Annotated[str | None, typer.Option(help="comma-separated token sizes, largest first")] = None,
    strict: Annotated[bool, typer.Option(help="fail on an unreadable, binary or non-UTF-8 file")] = False,
    rebuild: Annotated[bool, typer.Option(help="ignore the existing snapshot and embed everything")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    engine: Annotated[Engine, typer.Option(help="asyncio: embed in this process; ray: embed on a Ray "
                                           "actor pool (the scale extra)")] = Engine.asyncio,
    address: Annotated[str | None, typer.Option(help="with --engine ray: the Ray cluster to join, as "
                                                "`ray start --head` prints it, or auto (default: a "
                                                "local Ray started for the run)")] = None,
    actors: Annotated[int | None, typer.Option(min=1, help="with --engine ray: embedding actors "
                                               "(default: one per GPU, else one per CPU)")] = None,
) -> None:
    """Ingest notes into the snapshot in --index-dir (incremental by content hash)."""
    from index import IngestError, SnapshotError
    from index import ingest as run_ingest

    if engine is Engine.asyncio and (address is not None or actors is not None):
        _fail(f"{'--address' if address is not None else '--actors'} needs --engine ray", 2)
    for p in paths:
        if not p.exists():
            _fail(f"no such file or directory: {p}", 2)
    try:
        config = _config(chunk_sizes)
    except ValueError as e:
        _fail(str(e), 2)
    index_path = _index_dir(index_dir)
    if engine is Engine.ray:
        from index.ingestion.ray_engine import INSTALL_HINT, ingest_ray, ray_installed

        if not ray_installed():
            _fail(INSTALL_HINT, 2)
        # Ray Data logs each execution at INFO on the console; the progress bar is ours
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        job = ingest_ray(paths, index_path, config, address=address, actors=actors, strict=strict,
                         rebuild=rebuild, progress=progress)
    else:
        job = run_ingest(paths, index_path, config, strict=strict, rebuild=rebuild, progress=progress)
    try:
        report = asyncio.run(job)
    except (IngestError, SnapshotError) as e:
        _fail(str(e))
    for path, reason in report.skipped.items():
        typer.secho(f"warning: skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(report.summary())


@app.command()
def search(
    question: Annotated[str, typer.Argument(help="the question")],
    mode: Annotated[str, typer.Option(help="dense, bm25 or hybrid")] = "hybrid",
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="number of results")] = 5,
    merge: Annotated[bool, typer.Option(help="auto-merge children into their parent")] = True,
    index_dir: IndexDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Ranked passages for a question, without an answer."""
    from index import MODES, Retriever, SnapshotError, get_embedder, load_snapshot
    from service.settings import get_settings

    if mode not in MODES:
        _fail(f"mode must be one of {', '.join(MODES)}, got {mode!r}", 2)
    settings = get_settings()
    try:
        snap = load_snapshot(_index_dir(index_dir), config=_config())
        retriever = Retriever(snap, get_embedder(settings.model, settings.device, settings.embed_backend),
                              merge_threshold=settings.merge_threshold)
    except SnapshotError as e:
        _fail(str(e))
    hits = retriever.search(question, k=k, mode=mode, merge=merge)
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], indent=1, ensure_ascii=False))
        return
    for i, h in enumerate(hits, 1):
        where = " > ".join(h.heading_path) or "-"
        typer.secho(f"{i}. [{h.score:.4f}] {Path(h.source).name} :: {where}  (level {h.level}, "
                    f"chars {h.start}-{h.end})", bold=True)
        snippet = " ".join(h.text.split())
        typer.echo(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port [default: 8000]")] = None,
    index_dir: IndexDir = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API; with no index yet, ingest the configured corpus first."""
    from service.server import run_server

    code = run_server(host=host, port=port, index_dir=index_dir, workers=workers)
    raise typer.Exit(code)


@app.command(name="eval", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def eval_command(ctx: typer.Context) -> None:
    """Score retrieval and answers on a labelled question set (see `notesrag eval --help`)."""
    # Imported here so the service never loads the evaluation stack (ragas and friends).
    from eval.cli import main as eval_main

    raise typer.Exit(eval_main(list(ctx.args)))


def main() -> None:
    logging.basicConfig(level=os.environ.get("NOTESRAG_LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    from service.settings import SettingsError

    try:
        app()
    except SettingsError as e:  # one line per problem; a traceback would show the values
        print(e, file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
