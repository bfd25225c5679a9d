"""A TCP proxy in front of ClickHouse that can be told to stall: it keeps accepting connections and
reading requests, but stops answering, as a ClickHouse server hung on a disk or a lock would."""

from __future__ import annotations

import asyncio
import threading


class StallingProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; after ``stall()`` new requests get no answer at all."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.stalled = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """End every connection's task before the loop stops (a task left pending closes its sockets on a closed loop)."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def stall(self) -> None:
        self.stalled.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, towards_client: bool) -> None:
            while data := await src.read(65536):
                while towards_client and self.stalled.is_set():  # hold every answer back
                    await asyncio.sleep(0.1)
                if not towards_client and self.stalled.is_set():
                    continue  # swallow requests: the server never sees them
                dst.write(data)
                await dst.drain()

        try:
            await asyncio.gather(pump(reader, upstream_writer, False), pump(upstream_reader, writer, True))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            upstream_writer.close()
