"""``cope serve`` (and ``python -m cope.serve``): run the OpenAI-compatible endpoint.

The server's command line lives with the server; this module parses it,
binds and supervises. The listening socket is bound here, before the app starts, so a busy
port is one clear error line (and ``--port 0`` picks a free port, printed on
the ready line). SIGINT and SIGTERM shut down gracefully and exit with 0.

Keys never reach the logs: every log record of the process (ours, uvicorn's
access and error lines, the HTTP libraries' debug lines) is scrubbed when it
is made, replacing each configured secret (client keys, upstream keys) and
anything sent as ``Bearer <token>`` or as a ``key``/``token`` query parameter.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import sys
import threading
from typing import Any, Iterator, Sequence

from ..argtypes import PORT, POSITIVE
from ..errors import ConfigError, CopeError
from .logs import Scrubber, configure

# Seconds in-flight requests get to finish on shutdown before they are cancelled.
GRACEFUL_S = 10


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        sys.stderr.write(f"cope serve: error: {message} (see 'cope serve --help')\n")
        sys.exit(2)


def build_parser(prog: str = "cope serve") -> argparse.ArgumentParser:
    """The serve options; ``cope serve`` reuses them as a subcommand."""
    p = _Parser(prog=prog, description="Serve COPE presets as an OpenAI-compatible chat completions endpoint.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=PORT, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--config", default=None,
                   help="TOML file with presets, keys and limits; client keys may also come from the "
                        "environment variable COPE_API_KEYS (comma-separated), used together with the file's")
    p.add_argument("--preset", nargs="+", default=[], metavar="FILE",
                   help="preset files (from cope calibrate --write-preset) to serve, each under its name")
    p.add_argument("--threads", type=POSITIVE, default=None, help="CPU threads for local models (default: all)")
    p.add_argument("--workers", type=POSITIVE, default=1,
                   help="worker processes sharing the port and the SQLite ledger (default: 1); "
                        "each loads its own models")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default: info)")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per HTTP request")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="text lines (default) or one JSON object per line, with the request id")


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets
    # that say they are TCP, and accepted connections inherit this. With it on,
    # a response's body waits for the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(args: argparse.Namespace) -> int:
    """Load the config, bind, serve until a signal; raises CopeError for a user mistake."""
    from . import load_config
    from .config import ENV_KEYS

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        os.environ["COPE_THREADS"] = str(args.threads)
    config = load_config(args.config, preset_files=getattr(args, "preset", []))
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise ConfigError(f"the server needs FastAPI and uvicorn ({exc.name} is missing); "
                          "install them with: pip install 'cope[serve]'") from None

    Scrubber(config.secrets()).install()
    log_format = getattr(args, "log_format", "text")
    uvicorn_logs = configure(args.log_level, log_format)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if not config.keys and not _is_loopback(args.host):
        sys.stderr.write(f"cope serve: warning: listening on {args.host} with no keys ([keys] or {ENV_KEYS}): "
                         "anyone who can reach it can spend on the configured models\n")
    workers = getattr(args, "workers", 1) or 1
    if workers > 1 and config.ledger.backend == "memory":
        raise ConfigError("--workers needs a shared ledger: each worker would keep its own spend "
                          "([ledger] backend = \"memory\"); use the sqlite backend")
    app = create_app(config) if workers == 1 else None
    shown = f"[{host}]" if ":" in host else host
    if config.keys:
        keys = f"{len(config.keys)} key{'s' if len(config.keys) > 1 else ''}"
        keys += f" ({config.env_keys} from {ENV_KEYS} only)" if config.env_keys else ""
        keys += {"memory": ", spend per key kept in memory", "redis": ", spend per key in the redis ledger"}.get(
            config.ledger.backend, f", spend per key in {config.ledger_path()}")
    else:
        keys = "no keys: open to anyone who can reach it"
    ready = (f"cope serve: ready on http://{shown}:{port}/v1 with presets {', '.join(config.presets)} "
             f"({config.source}; {keys}" + (f"; {workers} worker processes" if workers > 1 else "") + ")")

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                sys.stderr.write(ready + "\n")
                sys.stderr.flush()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Shut down gracefully and return, instead of re-raising the signal afterwards.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    common = dict(log_level=args.log_level, access_log=not args.no_access_log, timeout_graceful_shutdown=GRACEFUL_S,
                  server_header=False, lifespan="off", http="cope.serve.http:HeaderTimedH11")
    if uvicorn_logs is not None:
        common["log_config"] = uvicorn_logs
    if workers > 1:
        _serve_workers(args, workers, sock, ready, common)
        return 0
    Server(uvicorn.Config(app, **common)).run(sockets=[sock])
    return 0


def _serve_workers(args: argparse.Namespace, workers: int, sock: socket.socket, ready: str,
                   common: dict[str, Any]) -> None:
    """K uvicorn worker processes on one socket, each building the app from the same config.

    Workers are spawned, so each one loads the config again from the files named
    in the environment (see :mod:`cope.serve.worker`) and builds its own models on
    first use: memory grows with K. They share spend through the SQLite ledger.
    """
    import json

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from .worker import ARGS_ENV

    os.environ[ARGS_ENV] = json.dumps({"config": os.path.abspath(args.config) if args.config else None,
                                       "preset": [os.path.abspath(f) for f in getattr(args, "preset", [])],
                                       "log_level": args.log_level,
                                       "log_format": getattr(args, "log_format", "text")})
    uv_config = uvicorn.Config("cope.serve.worker:build", factory=True, workers=workers, **common)

    class Supervisor(Multiprocess):
        def init_processes(self) -> None:
            super().init_processes()
            for proc in self.processes:
                if not proc.wait_until_ready(120, self.should_exit):
                    sys.stderr.write("cope serve: error: a worker did not start; stopping\n")
                    self.should_exit.set()
                    return
            sys.stderr.write(ready + "\n")
            sys.stderr.flush()

    Supervisor(uv_config, sockets=[sock]).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cope.serve`` and ``cope serve``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: Any) -> int:
    """Serve with parsed arguments; user mistakes become one line and status 2."""
    try:
        return serve(args)
    except CopeError as exc:
        sys.stderr.write(f"cope: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
