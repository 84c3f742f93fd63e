"""`indep-seg serve`: a TF-Serving-compatible gRPC / REST model server.

Flags are named as tensorflow_model_server's::

    indep-seg serve --port 8500 --rest_api_port 8501 --model_name horse \\
        --model_base_path /abs/exports/horse
    indep-seg serve --model_config_file models.config --enable_batching \\
        --batching_parameters_file batching.config

`--rest_api_port 0` (the default) disables REST, as in TF Serving. `--model_base_path_prefix ROOT`
(or the environment variable `INDEP_SEG_MODEL_BASE_PATH_PREFIX`) confines every base path to ROOT.
The server listens on
127.0.0.1 unless `--host` says otherwise, and runs until interrupted (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from indep_seg.commands import CommandError

# TF's C++ warnings (grappler cost-model notes on every SavedModel load) are noise in a
# server log; a user can still ask for them with TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def add_arguments(parser):
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    parser.add_argument(
        "--rest_api_port", type=int, default=0, help="REST port (0: no REST server)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--model_name", default="default", help="model name (with --model_base_path)"
    )
    parser.add_argument(
        "--model_base_path", default=None, help="folder of integer version sub-folders"
    )
    parser.add_argument(
        "--model_config_file",
        default=None,
        help="text-format ModelServerConfig (several models, policies, labels)",
    )
    parser.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0,
        help="re-read --model_config_file this often (0: never)",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1,
        help="poll the base paths for new versions this often (0: only at start)",
    )
    parser.add_argument("--enable_batching", action="store_true", help="server-side batching")
    parser.add_argument(
        "--batching_parameters_file",
        default=None,
        help="text-format BatchingParameters (implies --enable_batching)",
    )
    parser.add_argument(
        "--grpc_max_message_size",
        type=int,
        default=64 * 1024 * 1024,
        help="cap on one request / response in bytes, gRPC and REST (default 64 MiB)",
    )
    parser.add_argument("--grpc_max_threads", type=int, default=32, help="concurrent gRPC requests")
    parser.add_argument(
        "--max_image_pixels",
        type=int,
        default=8192 * 8192,
        help="cap on the pixels an encoded image sent to segment_bytes may declare "
        "(checked from its header before decoding; default 8192 x 8192)",
    )
    parser.add_argument(
        "--tensor_content",
        action="store_true",
        help="answer in tensor_content instead of the typed fields (float_val)",
    )
    parser.add_argument(
        "--model_base_path_prefix",
        default=None,
        metavar="ROOT",
        help="refuse every model base path (at start, on reload and at each poll) that "
        "does not resolve inside ROOT, symlinks and '..' followed (default: the "
        "environment variable INDEP_SEG_MODEL_BASE_PATH_PREFIX, else no check)",
    )
    parser.add_argument(
        "--ready_file",
        default=None,
        help="write 'GRPC_PORT REST_PORT' here once serving (for scripts using port 0)",
    )


def run(args) -> int:
    # The user's mistakes first, before TensorFlow is imported (seconds).
    if bool(args.model_config_file) == bool(args.model_base_path):
        raise CommandError(
            "give exactly one of --model_base_path (with --model_name) or --model_config_file"
        )
    if args.grpc_max_message_size < 1024:
        raise CommandError(
            "--grpc_max_message_size: expected at least 1024 bytes, got "
            f"{args.grpc_max_message_size}"
        )
    if args.max_image_pixels < 1:
        raise CommandError(
            f"--max_image_pixels: expected a positive number of pixels, got {args.max_image_pixels}"
        )
    from indep_seg.serving.config import (
        BatchingOptions,
        ConfigError,
        read_batching_parameters,
    )
    from indep_seg.serving.errors import ServingError
    from indep_seg.serving.server import ModelServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    batching = None
    try:
        if args.batching_parameters_file:
            batching = read_batching_parameters(args.batching_parameters_file)
        elif args.enable_batching:
            batching = BatchingOptions()
        kwargs = dict(
            host=args.host,
            port=args.port,
            rest_api_port=args.rest_api_port if args.rest_api_port > 0 else None,
            batching=batching,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            max_message_size=args.grpc_max_message_size,
            tensor_content=args.tensor_content,
            grpc_max_threads=args.grpc_max_threads,
            max_image_pixels=args.max_image_pixels,
            model_base_path_prefix=args.model_base_path_prefix or None,
        )
        if args.model_config_file:
            server = ModelServer.from_config_file(
                args.model_config_file,
                model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
                **kwargs,
            )
        else:
            server = ModelServer.from_base_path(args.model_name, args.model_base_path, **kwargs)
        server.start()
    except ConfigError as e:
        raise CommandError(str(e)) from None
    except ServingError as e:  # e.g. a version label naming a version that cannot be loaded
        raise CommandError(
            f"{args.model_config_file or args.model_base_path}: {e.message}"
        ) from None
    except (OSError, RuntimeError) as e:
        raise CommandError(f"cannot start the server: {e}") from None
    print(
        f"serving gRPC on {args.host}:{server.port}"
        + (f", REST on {args.host}:{server.rest_api_port}" if server.rest_api_port else ""),
        flush=True,
    )
    if args.ready_file:
        p = Path(args.ready_file)
        tmp = p.with_name(f"{p.name}.tmp-{os.getpid()}")
        tmp.write_text(f"{server.port} {server.rest_api_port or 0}\n")
        os.replace(tmp, p)
    done = threading.Event()

    def _stop(signum, frame):
        done.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        print("server stopped", file=sys.stderr, flush=True)
    return 0
