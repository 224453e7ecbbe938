"""``assetgen serve``: the app under uvicorn, with a graceful stop on SIGTERM / SIGINT.

On the signal the server stops accepting connections and submissions (503), ends the event streams,
lets in-flight requests finish (``GRACEFUL_HTTP_S``), then the lifespan drains the worker: the running job
may finish within ``--shutdown-grace`` seconds, else it is stopped at a stage boundary and requeued for the
next start. A second SIGINT is uvicorn's: it stops without waiting for requests. Exit status 0.
"""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

from engine.errors import ConfigError
from engine.service.config import ServiceConfig
from engine.service.logs import configure_logging, fields

GRACEFUL_HTTP_S = 10

log = logging.getLogger("assetgen.server")


def serve(config: ServiceConfig) -> int:
    """Run the service until a signal stops it; returns the exit status."""
    try:
        import uvicorn

        from engine.service.app import create_app
    except ImportError as err:
        from engine.errors import MissingDependencyError

        raise MissingDependencyError(err.name or "fastapi", "service") from None
    configure_logging(config.log_level, process="server")
    lock = _lock_data_dir(config.data_dir)  # before any worker starts: one line for a user's mistake
    try:
        listener = _listen(config.host, config.port)
    except ConfigError:
        lock.close()
        raise
    app = create_app(config)
    state = app.state.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not state.closing:
                log.info("signal received; stopping", extra=fields(signal=int(sig)))
            state.begin_shutdown()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None,
                                   access_log=False, timeout_graceful_shutdown=GRACEFUL_HTTP_S,
                                   log_level=config.log_level))
    host, port = listener.getsockname()[:2]
    log.info("serving", extra=fields(url=f"http://{host}:{port}", data_dir=str(config.data_dir),
                                     runner=config.runner.value, preset=config.pipeline.preset.value,
                                     device=config.pipeline.runtime.device.value,
                                     queue_size=config.queue_size))
    # uvicorn re-raises the signal that stopped it once it is done, under the handlers it found: make
    # those a no-op so a graceful stop exits with status 0 (not killed by SIGTERM, nor KeyboardInterrupt)
    found = {sig: signal.signal(sig, _already_handled) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        lock.close()
        for sig, handler in found.items():
            signal.signal(sig, handler)
    log.info("stopped")
    return 0 if server.started else 1


def _already_handled(sig, frame) -> None:
    return None


def _lock_data_dir(data_dir: Path):
    """An exclusive lock on ``data_dir/server.lock`` for the server's life (released by the kernel when
    the process dies, SIGKILL included): two servers must not run one queue."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "server.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"data folder {data_dir} is in use by another assetgen serve",
                          "stop that server or give this one another --data-dir") from None
    return handle


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port fails with one line and no worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror})",
                          "choose another --port or --host, or stop the server already using it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
