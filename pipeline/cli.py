"""The ``pipeline`` command: run the offline demo, ask one question, serve the demo's loopback services and the
local stand-ins."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import settings
from pipeline.demo import SITE_PORT
from pipeline.demo.run import run_demo, serve_demo
from pipeline.stand_ins import (
    CHAT_PORT,
    EMBEDDING_PORT,
    RERANK_PORT,
    chat_key,
    embedding_key,
    serve_stand_in,
    stand_in,
    stand_in_vectors,
)

if TYPE_CHECKING:
    from pipeline.local import ChatServiceConfig, EmbeddingServiceConfig, ServiceConfig


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

    serve = commands.add_parser(
        "serve-demo", help="Serve the bundled docs site and the local rerank, embeddings and chat stand-ins."
    )
    serve.add_argument("--site-port", type=int, default=SITE_PORT)
    serve.add_argument("--rerank-port", type=int, default=RERANK_PORT)
    serve.add_argument("--embedding-port", type=int, default=EMBEDDING_PORT)
    serve.add_argument("--chat-port", type=int, default=CHAT_PORT)

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
        return serve_demo(arguments.site_port, arguments.rerank_port, arguments.embedding_port, arguments.chat_port)
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


if __name__ == "__main__":
    sys.exit(main())
