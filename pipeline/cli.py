"""The ``pipeline`` command: run the offline demo, ask one question, serve the demo's loopback services and the
local stand-ins."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import settings
from pipeline.demo import SITE_PORT, SOURCES_FILE, serve_directory, site_dir

if TYPE_CHECKING:
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.local import (
        ChatServiceConfig,
        EmbeddingServiceConfig,
        HashedVectors,
        LocalRelevanceScorer,
        ServiceConfig,
    )

RERANK_PORT = 8765
EMBEDDING_PORT = 8766
CHAT_PORT = 8767
# The key the local embeddings and chat stand-ins check when EMBEDDING_KEY or INFERENCE_KEY is unset.
LOCAL_DEV_KEY = "local-dev-key"
# The model the demo's embeddings stand-in plays: the one app.json attaches as EMBEDDING.
DEMO_EMBEDDING_MODEL_ID = "cohere-embed-multilingual"
# The model ID the demo's chat requests name: the one the README attaches as INFERENCE. The stand-in answers
# extractively whatever a request names, and its answers say so (model extractive-answerer).
DEMO_CHAT_MODEL_ID = "claude-4-5-haiku"
# The demo prints its own summary; Dagster's per-step debug events would bury it.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="Run every asset end to end on the bundled site, offline.")
    demo.add_argument("--top", type=int, default=3, help="Passages to print per query.")
    demo.add_argument(
        "--local-embeddings",
        action="store_true",
        help="Embed with all-MiniLM-L6-v2 in the run process (the deploy without an EMBEDDING add-on) instead of "
        "through the local embeddings stand-in.",
    )

    ask = commands.add_parser(
        "ask",
        help="Answer one question now from the current index, without a run.",
        description="Retrieve, rerank, pack and answer one question from the current index through the pipeline's "
        "resources and caches, without a Dagster run and without writing to the published tables; prints the answer, "
        "its cited sources and what it billed. Starts the local stand-ins for the endpoints RERANK_URL, EMBEDDING_URL "
        "and INFERENCE_URL leave unset, as the demo does.",
    )
    ask.add_argument("question", help="The question, as a user would ask it.")
    ask.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    ask.add_argument(
        "--local-embeddings",
        action="store_true",
        help="Embed the question with all-MiniLM-L6-v2 in process (for an index built by `pipeline demo "
        "--local-embeddings`, or a deploy without an EMBEDDING add-on).",
    )

    serve = commands.add_parser("serve-demo", help="Serve the bundled docs site and the local rerank service.")
    serve.add_argument("--site-port", type=int, default=SITE_PORT)
    serve.add_argument("--rerank-port", type=int, default=RERANK_PORT)
    serve.add_argument("--embedding-port", type=int, default=EMBEDDING_PORT)

    service = add_service_command(
        commands,
        "rerank-service",
        RERANK_PORT,
        help="Serve the local /v1/rerank service.",
        description="Serve the local /v1/rerank service (bearer token: RERANK_KEY), optionally misbehaving on purpose.",
    )
    add_fault_arguments(service).add_argument(
        "--max-documents", type=int, metavar="N", help="Documents accepted per request, past it 400 [1000]."
    )

    embeddings = add_service_command(
        commands,
        "embedding-service",
        EMBEDDING_PORT,
        help="Serve the local /v1/embeddings stand-in.",
        description="Serve a local stand-in for Heroku Inference /v1/embeddings (bearer token: EMBEDDING_KEY): "
        "all-MiniLM-L6-v2 vectors (384 dimensions), or hashed ones with --fast, whatever model a request names; "
        "optionally misbehaving on purpose.",
    )
    embeddings.add_argument(
        "--fast",
        action="store_true",
        help="Deterministic vectors hashed from each text instead of the model: no CPU cost, no meaning "
        "(for scale and pacing benchmarks).",
    )
    embeddings.add_argument("--dimensions", type=int, metavar="N", help="With --fast: numbers per hashed vector [384].")
    add_tokens_per_minute(add_fault_arguments(embeddings))

    chat = add_service_command(
        commands,
        "chat-service",
        CHAT_PORT,
        help="Serve the local /v1/chat/completions stand-in.",
        description="Serve a local stand-in for Heroku Inference /v1/chat/completions (bearer token: INFERENCE_KEY): "
        "extractive answers (the passages' best-matching sentences, each cited), whatever model a request names; "
        "optionally misbehaving on purpose.",
    )
    add_tokens_per_minute(add_fault_arguments(chat))

    # The Procfile's process types (docs/deploy.md).
    commands.add_parser(
        "release", help="Create or migrate Dagster's storage and the pipeline's tables (Procfile release)."
    )
    for name, summary in (
        ("web", "Serve the Dagster UI on $PORT behind basic authentication (Procfile web)."),
        ("worker", "Run the Dagster daemon: schedules, sensors, automation and queued runs (Procfile worker)."),
    ):
        process = commands.add_parser(name, help=summary)
        process.add_argument("--workspace", type=Path, default=Path("workspace.yaml"), help="Dagster workspace file.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "demo":
        return run_demo(top=arguments.top, local_embeddings=arguments.local_embeddings)
    if arguments.command == "ask":
        from pipeline.ask_command import run_ask

        return run_ask(arguments.question, as_json=arguments.json, local_embeddings=arguments.local_embeddings)
    if arguments.command == "serve-demo":
        return serve_demo(arguments.site_port, arguments.rerank_port, arguments.embedding_port)
    if arguments.command in ("release", "web", "worker"):
        return run_process(arguments)
    vectors = None
    try:
        config = service_config(arguments)
        if arguments.command == "embedding-service":
            vectors = stand_in_vectors(fast=arguments.fast, dimensions=arguments.dimensions)
    except ValueError as error:
        parser.error(f"{arguments.command}: {error}")
    return serve_stand_in(arguments.host, arguments.port, stand_in(arguments.command, config, vectors))


def run_process(arguments: argparse.Namespace) -> int:
    from pipeline import heroku

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Alembic announces every plugin it sets up; migrations themselves are logged by Dagster.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if arguments.command == "release":
            return heroku.release()
        if not arguments.workspace.is_file():
            raise heroku.ProcessConfigurationError(
                f"{arguments.command}: workspace file {arguments.workspace} not found"
            )
        return getattr(heroku, arguments.command)(arguments.workspace)
    except (heroku.ProcessConfigurationError, settings.SettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# Config field → the flag that sets it: both stand-ins', then each one's own.
FAULT_FLAGS = {
    "requests_per_minute": "--requests-per-minute",
    "error_rate": "--error-rate",
    "timeout_rate": "--timeout-rate",
    "hang_seconds": "--hang-seconds",
    "malformed_rate": "--malformed-rate",
    "added_latency_seconds": "--latency",
    "seed": "--seed",
    "allowed_models": "--allowed-models",
}
SERVICE_FLAGS = {
    "rerank-service": {"max_documents": "--max-documents"},
    "embedding-service": {"tokens_per_minute": "--tokens-per-minute"},
    "chat-service": {"tokens_per_minute": "--tokens-per-minute"},
}


def add_service_command(commands, name: str, port: int, **texts: str) -> argparse.ArgumentParser:
    """A ``*-service`` command serving a stand-in on ``--host`` and ``--port`` (default ``port``)."""
    command = commands.add_parser(name, **texts)
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=port)
    return command


def add_fault_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The stand-ins' shared config knobs as flags, in a group a command adds its own to.

    Unset ones keep the config's defaults (listed in brackets)."""
    faults = parser.add_argument_group("limits and fault injection")
    faults.add_argument(
        "--requests-per-minute",
        type=int,
        metavar="N",
        dest="requests_per_minute",
        help="Per model over a sliding minute; past it, 429 [unlimited].",
    )
    faults.add_argument("--omit-retry-after", action="store_true", help="Send 429s without Retry-After, as Heroku may.")
    faults.add_argument(
        "--error-rate", type=float, metavar="RATE", help="Share of requests answered with HTTP 500 [0]."
    )
    faults.add_argument(
        "--timeout-rate", type=float, metavar="RATE", help="Share of requests held unanswered, then 504 [0]."
    )
    faults.add_argument(
        "--hang-seconds", type=float, metavar="SECONDS", help="How long --timeout-rate holds a request [30]."
    )
    faults.add_argument(
        "--malformed-rate", type=float, metavar="RATE", help="Share of 200s whose JSON body is cut off [0]."
    )
    faults.add_argument(
        "--latency", type=float, metavar="SECONDS", dest="added_latency_seconds", help="Added to every request [0]."
    )
    faults.add_argument("--seed", type=int, metavar="N", help="Seed of the random faults [0].")
    faults.add_argument(
        "--test-mode",
        action="store_true",
        help="Honour an X-Fault request header: 400, 429, 500, timeout, malformed, garbled or latency=SECONDS.",
    )
    faults.add_argument(
        "--allowed-models",
        metavar="MODELS",
        help="Comma-separated models the key may use; the others answer 403 [all known models].",
    )
    return faults


def add_tokens_per_minute(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--tokens-per-minute",
        type=int,
        metavar="N",
        help="Per model over a sliding minute, counted by the service (tiktoken cl100k); past it, 429 [unlimited].",
    )


def embedding_key() -> str:
    """The bearer token the local embeddings stand-in checks: EMBEDDING_KEY, else the local default."""
    return settings.value("EMBEDDING_KEY") or LOCAL_DEV_KEY


def chat_key() -> str:
    """The bearer token the local chat stand-in checks: INFERENCE_KEY, else the local default."""
    return settings.value("INFERENCE_KEY") or LOCAL_DEV_KEY


def service_config(arguments: argparse.Namespace) -> ServiceConfig | EmbeddingServiceConfig | ChatServiceConfig:
    """The config of the stand-in the command serves, from its flags; a bad value raises ValueError naming its flag."""
    from pipeline.local import ChatServiceConfig, EmbeddingServiceConfig, ServiceConfig

    flags = {**FAULT_FLAGS, **SERVICE_FLAGS[arguments.command]}
    values = {field: getattr(arguments, field) for field in flags}
    if values["allowed_models"] is not None:
        values["allowed_models"] = tuple(
            model.strip() for model in values["allowed_models"].split(",") if model.strip()
        )
    options = {
        "omit_retry_after": arguments.omit_retry_after,
        "test_mode": arguments.test_mode,
        **{field: value for field, value in values.items() if value is not None},
    }
    try:
        if arguments.command == "embedding-service":
            return EmbeddingServiceConfig(api_key=embedding_key(), **options)
        if arguments.command == "chat-service":
            return ChatServiceConfig(api_key=chat_key(), **options)
        return ServiceConfig(api_key=settings.string("RERANK_KEY"), **options)
    except ValueError as error:
        message = str(error)
        for field, flag in flags.items():
            message = re.sub(rf"\b(\w+Config\.)?{field}\b", flag, message)
        raise ValueError(message) from None


def stand_in_vectors(*, fast: bool, dimensions: int | None = None) -> MiniLMEmbedder | HashedVectors:
    """The embeddings stand-in's vectors: the pipeline's local model, or hashed ones (``fast``)."""
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.local import HashedVectors

    if fast:
        return HashedVectors() if dimensions is None else HashedVectors(dimensions)
    if dimensions is not None:
        raise ValueError("--dimensions applies to --fast only: all-MiniLM-L6-v2 vectors have 384 dimensions")
    return MiniLMEmbedder()


# The one place that wires the local stand-ins (pipeline.local) to the product: the stand-in
# scorer gets the pipeline's analyzer, header lines and stored vectors from here.
def local_scorer(embedder: MiniLMEmbedder | None = None, **options: Any) -> LocalRelevanceScorer:
    """The stand-in's scorer, reading documents as the pipeline writes them: its analyzer, its header lines.

    ``options`` go to :class:`pipeline.local.LocalRelevanceScorer` (``known_vectors``,
    ``cache_size``, ``weights``); ``embedder`` defaults to a new all-MiniLM-L6-v2 embedder.
    """
    from pipeline.chunking import header_line
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.local import LocalRelevanceScorer
    from pipeline.store.lexical import analyze

    return LocalRelevanceScorer(embedder or MiniLMEmbedder(), analyze=analyze, header_line=header_line, **options)


def _stored_vectors_scorer(embedder: MiniLMEmbedder | None = None) -> LocalRelevanceScorer:
    """The local scorer, reusing the embeddings the pipeline stored at ingest (same model, computed earlier)."""
    from pipeline.instance import state_store_url
    from pipeline.local import StoredEmbeddings
    from pipeline.store.state import StateStore

    store = StateStore(state_store_url())
    return local_scorer(embedder, known_vectors=StoredEmbeddings(store.embeddings.iter_embedded_texts))


def _local_rerank_service(stack: ExitStack, port: int, embedder: MiniLMEmbedder) -> str:
    from pipeline.local import LocalRerankService, ServiceConfig

    service = stack.enter_context(
        LocalRerankService(
            ServiceConfig(api_key=settings.string("RERANK_KEY")),
            port=port,
            warm=True,
            scorer=_stored_vectors_scorer(embedder),
        )
    )
    return service.url


def _local_embedding_service(stack: ExitStack, port: int, embedder: MiniLMEmbedder) -> str:
    """The embeddings stand-in with all-MiniLM-L6-v2 vectors, playing the EMBEDDING add-on."""
    from pipeline.local import EmbeddingServiceConfig, LocalEmbeddingService

    service = stack.enter_context(
        LocalEmbeddingService(EmbeddingServiceConfig(api_key=embedding_key()), vectors=embedder, port=port, warm=True)
    )
    return service.url


def _local_chat_service(stack: ExitStack, port: int) -> str:
    """The chat stand-in answering with the extractive answerer, playing a chat model attached --as INFERENCE."""
    from pipeline.answer.extractive import ExtractiveChatModel
    from pipeline.local import ChatServiceConfig, LocalChatService

    config = ChatServiceConfig(api_key=chat_key())
    service = stack.enter_context(LocalChatService(config, answerer=ExtractiveChatModel(), port=port, warm=True))
    return service.url


def _attach_stand_in(name: str, url: str, key: str, model_id: str) -> None:
    """Point ``<name>_URL``, ``<name>_KEY`` and ``<name>_MODEL_ID`` (unless set) at a stand-in, as attaching a
    model ``--as <name>`` sets them."""
    os.environ[f"{name}_URL"] = url
    os.environ[f"{name}_KEY"] = key
    os.environ.setdefault(f"{name}_MODEL_ID", model_id)


def serve_demo(site_port: int, rerank_port: int, embedding_port: int) -> int:
    from pipeline.embedding import MiniLMEmbedder

    with ExitStack() as stack:
        # One all-MiniLM-L6-v2 session for both stand-ins.
        embedder = MiniLMEmbedder()
        site_url = stack.enter_context(serve_directory(site_dir(), port=site_port))
        rerank_url = _local_rerank_service(stack, rerank_port, embedder)
        embedding_url = _local_embedding_service(stack, embedding_port, embedder)
        print(f"demo docs site:           {site_url}")
        print(f"local rerank service:     {rerank_url}  (RERANK_KEY={settings.SETTINGS['RERANK_KEY'].default})")
        print(f"local embeddings service: {embedding_url}  (EMBEDDING_KEY={LOCAL_DEV_KEY})")
        print("Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    return 0


def stand_in(command: str, config, vectors):
    """The stand-in service a ``*-service`` command serves, given what the pipeline lends it."""
    from pipeline.answer.extractive import ExtractiveChatModel
    from pipeline.local import ChatService, EmbeddingService, RerankService

    if command == "embedding-service":
        return EmbeddingService(config, vectors)
    if command == "chat-service":
        return ChatService(config, ExtractiveChatModel())
    return RerankService(config, _stored_vectors_scorer())


def serve_stand_in(host: str, port: int, service) -> int:
    from pipeline.local import run_service

    # One line per request from the service (status, model, counts, fault; never the token or the texts).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_service(service, host=host, port=port)
    return 0


def start_missing_stand_ins(stack: ExitStack, *, local_embeddings: bool) -> None:
    """Start the local rerank, embeddings and chat stand-ins for the endpoints the environment does not name.

    Without RERANK_URL the rerank stand-in serves the default one. Without EMBEDDING_URL (and unless
    ``local_embeddings``) the embeddings stand-in plays the EMBEDDING add-on, and without INFERENCE_URL
    the chat stand-in plays a chat model attached --as INFERENCE: their variables are set to them, so
    resources built afterwards take the remote paths as a deploy with those models does. They stop
    when ``stack`` closes.
    """
    from pipeline.embedding import MiniLMEmbedder

    # One all-MiniLM-L6-v2 session for both stand-ins.
    embedder = MiniLMEmbedder()
    if not settings.is_set("RERANK_URL"):
        _local_rerank_service(stack, RERANK_PORT, embedder)
    if not local_embeddings and not settings.is_set("EMBEDDING_URL"):
        url = _local_embedding_service(stack, EMBEDDING_PORT, embedder)
        _attach_stand_in("EMBEDDING", url, embedding_key(), DEMO_EMBEDDING_MODEL_ID)
    if not settings.is_set("INFERENCE_URL"):
        _attach_stand_in("INFERENCE", _local_chat_service(stack, CHAT_PORT), chat_key(), DEMO_CHAT_MODEL_ID)


def _demo_instance():
    import dagster as dg

    from pipeline.instance import prepare_instance

    # The demo's runs land in a persistent instance, so `dagster dev` shows them afterwards.
    prepare_instance()
    return dg.DagsterInstance.get()


def run_demo(top: int, local_embeddings: bool = False) -> int:
    from pipeline.crawl.sources import load_sources
    from pipeline.defs.jobs import context_sets_job, ingest_source_job
    from pipeline.defs.partitions import register_sources
    from pipeline.demo import report
    from pipeline.inputs import is_url

    started = time.perf_counter()
    data_dir = Path(settings.string("PIPELINE_DATA_DIR"))
    sources_location = settings.string("PIPELINE_SOURCES")
    with ExitStack() as stack:
        if not is_url(sources_location) and Path(sources_location).resolve() == SOURCES_FILE.resolve():
            stack.enter_context(serve_directory(site_dir(), port=SITE_PORT))
        start_missing_stand_ins(stack, local_embeddings=local_embeddings)
        # Loaded now: its resources read the EMBEDDING_* and INFERENCE_* settings just given.
        from pipeline.definitions import defs

        instance = stack.enter_context(_demo_instance())
        sources = load_sources(sources_location)
        register_sources(instance, [source.name for source in sources])
        for source in sources:
            print(f"ingesting source {source.name} ...", flush=True)
            result = defs.resolve_job_def(ingest_source_job.name).execute_in_process(
                instance=instance, partition_key=source.name, run_config=QUIET_RUN_CONFIG
            )
            report.print_materializations(result)
        print("retrieving, reranking, packing and answering ...", flush=True)
        result = defs.resolve_job_def(context_sets_job.name).execute_in_process(
            instance=instance, run_config=QUIET_RUN_CONFIG
        )
        report.print_materializations(result)
        context_sets = data_dir / "ranked_context_sets.jsonl"
        report.print_context_sets(context_sets, result, top)
        report.print_answers(data_dir / "answers.jsonl", context_sets, result)
    print(f"demo finished in {time.perf_counter() - started:.1f}s; Dagster home: {os.environ['DAGSTER_HOME']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
