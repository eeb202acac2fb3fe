"""A TCP proxy in front of a broker that can cut one kind of Kafka client off (tests only).

The broker advertises the proxy's port, so every client, including those the metadata
redirects, goes through it. Each connection is classified by the client id in its first
request header; :meth:`KafkaProxy.cut` closes the connections of clients whose id starts
with a prefix and refuses their new ones until :meth:`KafkaProxy.restore`. Other clients
(the test's producer and reader) keep working, as they would when only the worker's host
loses its network. :meth:`KafkaProxy.drop_produce` is subtler: the clients' Produce requests
are swallowed (never forwarded, never answered) while every other request (fetches,
commits, heartbeats, metadata) passes, as with a broker that reads but cannot write.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading

HOST = "127.0.0.1"
#: Kafka's api key of Produce requests.
PRODUCE = 0


def client_id_of(request: bytes) -> str:
    """The client id of a Kafka request (size prefix removed); request header v1+."""
    # api_key int16, api_version int16, correlation_id int32, client_id nullable string
    (length,) = struct.unpack_from(">h", request, 8)
    return "" if length < 0 else request[10 : 10 + length].decode(errors="replace")


class KafkaProxy:
    """Forwards ``port`` to ``upstream_port`` on 127.0.0.1, in a thread of its own."""

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.blocked: str | None = None
        self.refused = 0
        self.dropping: str | None = None
        self.dropped = 0
        self._open: set[tuple[str, asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> KafkaProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close_all(""), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self, client_prefix: str) -> None:
        """Drop the connections of clients whose id starts with ``client_prefix``; refuse new."""
        self.blocked = client_prefix
        asyncio.run_coroutine_threadsafe(self._close_all(client_prefix), self._loop).result(10)

    def drop_produce(self, client_prefix: str) -> None:
        """Swallow the Produce requests of clients whose id starts with ``client_prefix``."""
        self.dropping = client_prefix

    def restore(self) -> None:
        """Let every client connect, and produce, again."""
        self.blocked = None
        self.dropping = None

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, self.port)

    async def _close_all(self, prefix: str) -> None:
        for entry in [e for e in self._open if e[0].startswith(prefix)]:
            self._open.discard(entry)
            for writer in entry[1:]:
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = await reader.readexactly(4)
            first = await reader.readexactly(struct.unpack(">i", size)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        client = client_id_of(first)
        if self.blocked is not None and client.startswith(self.blocked):
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            writer.close()
            return
        up_writer.write(size + first)
        entry = (client, writer, up_writer)
        self._open.add(entry)
        await asyncio.gather(
            self._requests(client, reader, up_writer), self._pipe(up_reader, writer)
        )
        self._open.discard(entry)

    async def _requests(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward the client's requests one by one, swallowing Produce while dropping."""
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while True:
                size = await reader.readexactly(4)
                request = await reader.readexactly(struct.unpack(">i", size)[0])
                (api_key,) = struct.unpack_from(">h", request, 0)
                dropping = self.dropping
                if api_key == PRODUCE and dropping is not None and client.startswith(dropping):
                    self.dropped += 1
                    continue
                writer.write(size + request)
                await writer.drain()
        writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
