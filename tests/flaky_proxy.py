"""A TCP proxy that breaks connections, for tests/s3.sh: meterlake talks to the S3 endpoint
through it, and some connections are cut midway, as a flaky network or a dying load
balancer does.

Usage: flaky_proxy.py LISTEN_PORT TARGET_PORT CONTROL_FILE

While CONTROL_FILE exists and holds `every N SEED`, every Nth new connection is cut: after
a number of bytes drawn from 0..4096 (seeded, so a run is repeatable), in the direction
drawn (the request, e.g. midway through a PUT's body, or the answer, e.g. midway through a
GET's body), with a reset. Without the file, bytes pass untouched. Prints `cut` lines to
stderr and `ready` to stdout once listening.
"""
import asyncio
import random
import socket
import struct
import sys

LISTEN, TARGET, CONTROL = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
state = {"n": 0, "rng": None, "seed": None}


def plan():
    """None (pass) or (direction, bytes) for the next connection."""
    try:
        every, seed = open(CONTROL).read().split()[1:3]
    except (OSError, ValueError):
        return None
    if state["seed"] != seed:
        state["rng"], state["seed"], state["n"] = random.Random(int(seed)), seed, 0
    state["n"] += 1
    if state["n"] % int(every):
        return None
    rng = state["rng"]
    return rng.choice(["request", "answer"]), rng.randrange(0, 4096)


def reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER 0: close sends a reset, not a clean end of stream.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def pipe(reader, writer, limit, cut):
    sent = 0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if limit is not None and sent + len(data) >= limit:
                writer.write(data[: limit - sent])
                await writer.drain()
                cut()
                return
            writer.write(data)
            await writer.drain()
            sent += len(data)
        writer.write_eof()
    except (ConnectionError, OSError):
        cut()


async def handle(c_reader, c_writer):
    p = plan()
    try:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        reset(c_writer)
        return

    def cut():
        reset(c_writer)
        reset(s_writer)

    if p:
        print(f"cut {p[0]} after {p[1]} bytes", file=sys.stderr, flush=True)
    up = p[1] if p and p[0] == "request" else None
    down = p[1] if p and p[0] == "answer" else None
    await asyncio.gather(
        pipe(c_reader, s_writer, up, cut), pipe(s_reader, c_writer, down, cut)
    )
    for w in (c_writer, s_writer):
        if not w.is_closing():
            w.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
