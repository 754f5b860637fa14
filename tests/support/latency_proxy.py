"""A TCP proxy that makes a local server look far away: every request arrives ``delay`` seconds late.

A batch export over a WAN is bound by round trips, not bandwidth; on loopback
a round trip costs nothing, so a benchmark that should show how work spreads
over many processes would only measure the CPU. :class:`LatencyProxy` sits in
front of a server (the test Orthanc) and holds each chunk a client sends for
``delay`` seconds before passing it on. An HTTP request's head goes out in one
write, so every request gets ``delay`` added, whichever connection carries it;
answers flow back at once. It knows nothing of HTTP, so streamed answers that
end at connection close (Orthanc's WADO-RS) pass through unchanged.

Usage::

    with LatencyProxy("127.0.0.1", orthanc.http_port, delay=0.04) as proxy:
        url = f"{proxy.url}/dicom-web"

Command line, to run it in a process of its own (a benchmark keeps its CPU
out of the processes it measures)::

    python -m tests.support.latency_proxy --target 127.0.0.1:8042 --port 8043 --delay 0.04
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
import time
from types import TracebackType

logger = logging.getLogger(__name__)

_CHUNK = 256 * 1024


class LatencyProxy:
    """Forward TCP connections to ``target_host:target_port``, each client chunk ``delay`` seconds late.

    Parameters
    ----------
    target_host, target_port
        The server behind the proxy.
    delay
        Seconds added to everything the client sends (so: to every request).
    port
        The loopback port to listen on; 0 picks a free one (see :attr:`port`).
    """

    def __init__(self, target_host: str, target_port: int, *, delay: float, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.port = port
        self.requests = 0
        """Chunks the clients sent (about one per request)."""
        self.connections = 0
        """Connections the clients opened (one per DIMSE association)."""
        self._doomed: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the target's address as a client should use it."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LatencyProxy:
        """Listen, in a thread of its own; returns self once connections are accepted."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=256), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._close(self._server), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def open_connections(self) -> int:
        """Client connections open now."""
        return len(self._writers) // 2

    def drop_on_next_request(self) -> None:
        """Close each connection open now, both ways, when its client next sends something.

        As a server that dropped an idle connection just as the client reused it:
        the client finds out only when its request gets no answer.
        """
        self._doomed = set(self._writers)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    async def _close(self, server: asyncio.Server) -> None:
        server.close()
        for writer in list(self._writers):
            writer.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError as error:
            logger.warning("latency proxy: cannot reach %s:%d: %s", *self.target, error)
            client_writer.close()
            return
        self.connections += 1
        self._writers |= {client_writer, server_writer}
        try:
            await asyncio.gather(
                self._delayed(client_reader, server_writer, client_writer),
                self._pump(server_reader, client_writer),
            )
        except asyncio.CancelledError:
            # Stopped with connections open. Not re-raised: Python 3.11's stream
            # server reports a cancelled connection task as an error.
            pass
        finally:
            self._writers -= {client_writer, server_writer}
            server_writer.close()

    async def _delayed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        """Client to server: each chunk leaves ``delay`` seconds after it came, in order (unless doomed)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(_CHUNK):
                if client in self._doomed:
                    client.close()
                    writer.close()
                    break
                self.requests += 1
                queue.put_nowait((time.monotonic() + self.delay, chunk))
        except ConnectionError:
            pass
        queue.put_nowait((time.monotonic() + self.delay, b""))
        with contextlib.suppress(ConnectionError):
            await delivery
        _half_close(writer)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Server to client, as it comes; the client's side is closed when the server closes."""
        try:
            while chunk := await reader.read(_CHUNK):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()


def _half_close(writer: asyncio.StreamWriter) -> None:
    """Tell the server the client is done sending, so it can finish its answer and close."""
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()


def main(argv: list[str] | None = None) -> int:
    """Run a proxy until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server behind the proxy")
    parser.add_argument("--port", type=int, default=0, help="loopback port to listen on (0: any free one)")
    parser.add_argument("--delay", type=float, default=0.04, help="seconds added to each request")
    args = parser.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LatencyProxy(host, int(port), delay=args.delay, port=args.port) as proxy:
        print(proxy.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
