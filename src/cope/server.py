"""``python -m cope.server`` (and ``cope serve``): run the OpenAI-compatible endpoint.

The implementation lives in :mod:`cope.serve`; this module is the command
line. The listening socket is bound here, before the app starts, so a busy
port is one clear error line (and ``--port 0`` picks a free port, printed on
the ready line). SIGINT and SIGTERM shut down gracefully and exit with 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, Iterator, Sequence

from .errors import ConfigError, CopeError

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
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--config", default=None, help="TOML file with presets, keys and limits")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for local models (default: all)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default: info)")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per HTTP request")


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name
    sock = socket.socket(family, socket.SOCK_STREAM)
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
    from .serve import load_config

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        os.environ["COPE_THREADS"] = str(args.threads)
    config = load_config(args.config)
    try:
        import uvicorn

        from .serve.app import create_app
    except ImportError as exc:
        raise ConfigError(f"the server needs FastAPI and uvicorn ({exc.name} is missing); "
                          "install them with: pip install 'cope[serve]'") from None

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s",
                        stream=sys.stderr)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if not config.keys and not _is_loopback(args.host):
        sys.stderr.write(f"cope serve: warning: listening on {args.host} with no [keys]: anyone who can reach "
                         "it can spend on the configured models\n")
    app = create_app(config)
    shown = f"[{host}]" if ":" in host else host
    ready = (f"cope serve: ready on http://{shown}:{port}/v1 with presets {', '.join(config.presets)} "
             f"({config.source}; spend per key is kept in memory)")

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

    uv_config = uvicorn.Config(app, log_level=args.log_level, access_log=not args.no_access_log,
                               timeout_graceful_shutdown=GRACEFUL_S, server_header=False, lifespan="off")
    Server(uv_config).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cope.server`` and ``cope serve``."""
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
