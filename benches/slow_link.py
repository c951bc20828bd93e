#!/usr/bin/env python3
"""slow_link.py LISTEN_PORT TARGET_PORT DELAY_MS RATE_MBIT

A TCP forwarder on loopback that behaves like a slower network link, for benches where
`tc netem` is missing from the kernel: every byte is delivered DELAY_MS after it was
sent, in each direction (so a request and its answer take 2 x DELAY_MS more), and each
direction carries at most RATE_MBIT megabits a second, shared by all connections (one
link, not one per connection). RATE_MBIT 0: no cap. Runs until killed.
"""

import asyncio
import sys
import time


class Direction:
    """One direction of the link: a shared rate and a fixed delay."""

    def __init__(self, delay, rate_bytes):
        self.delay = delay
        self.rate = rate_bytes
        self.free_at = time.monotonic()

    def departure(self, n):
        """When n bytes sent now have left the sender, after those before them."""
        now = time.monotonic()
        if not self.rate:
            return now
        self.free_at = max(self.free_at, now) + n / self.rate
        return self.free_at


async def pump(reader, writer, link):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            at, data = await queue.get()
            if data is None:
                break
            pause = at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(64 << 10)
            if not data:
                break
            at = link.departure(len(data)) + link.delay
            await queue.put((at, data))
            # The sender is held back while the link is busy, as by a full socket.
            busy = link.free_at - time.monotonic() - 0.05
            if busy > 0:
                await asyncio.sleep(busy)
    except ConnectionError:
        pass
    await queue.put((0, None))
    await sender


async def main():
    listen, target, delay_ms, rate_mbit = sys.argv[1:5]
    up = Direction(float(delay_ms) / 1000, float(rate_mbit) * 1e6 / 8)
    down = Direction(float(delay_ms) / 1000, float(rate_mbit) * 1e6 / 8)

    async def serve(c_reader, c_writer):
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", int(target))
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(
            pump(c_reader, s_writer, up), pump(s_reader, c_writer, down), return_exceptions=True
        )

    server = await asyncio.start_server(serve, "127.0.0.1", int(listen))
    async with server:
        await server.serve_forever()


asyncio.run(main())
