"""A threaded test HTTP server on loopback that can be stopped while clients hold connections open.

The Vitrea-like gateway and the fault-injection server both need it:
``shutdown()`` alone waits for handler threads parked on idle keep-alive
connections, so the server tracks its connections and shuts them down on stop.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any


class TrackingHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with daemon handlers, a deep accept queue, and a list of open connections."""

    daemon_threads = True
    request_queue_size = 64  # the default 5 drops concurrent connects, which then wait 1 s for a SYN retry

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def serve_in_background(self, name: str) -> threading.Thread:
        """Serve on a daemon thread (polling for shutdown every 50 ms); return the thread."""
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), name=name, daemon=True)
        thread.start()
        return thread

    def stop_serving(self, thread: threading.Thread) -> None:
        """Stop the thread :meth:`serve_in_background` started, close every connection and the socket."""
        self.shutdown()
        self.close_connections()
        self.server_close()
        thread.join(timeout=10)

    def close_connections(self) -> None:
        """Wake the handler threads that wait on open connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
