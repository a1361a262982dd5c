#!/usr/bin/env python3
"""bench/idle-clients.py: hold COUNT idle keep-alive connections to respcache.

Used by bench/idle. Opens COUNT connections to HOST:PORT (at most CONCURRENCY
connecting at once), sends one GET /v1/responses/<id> on each and reads the
whole answer (it must be 200, X-Cache: HIT, and not Connection: close), then
leaves every connection idle. Prints, one line each, flushed:

  OPENED open=N ok=N hit=N failed=N retries=N secs=S [error=...]
      once the COUNT connections are open and answered;
  AGAIN open=N ok=N hit=N closed=N failed=N secs=S
      on SIGUSR1: a second request on every connection the server has not
      closed (closed: how many it had), to show they are still usable;
  DONE open=N closed=N
      on SIGTERM (or SIGINT): how many the server had closed; then it closes
      them all and exits 0.

It exits 3 by itself after --max-seconds (a bound if nobody stops it).
Ids are those of bench/lib.sh's id_of(), index i % --ids.
"""
import argparse
import asyncio
import resource
import signal
import sys
import time


def id_of(i):
    x = (i ^ 0x5BD1E995) & 0xFFFFFFFF
    out = ["resp_"]
    for _ in range(6):
        x = (x ^ (x << 13)) & 0xFFFFFFFF
        x ^= x >> 17
        x = (x ^ (x << 5)) & 0xFFFFFFFF
        out.append("%08x" % x)
    return "".join(out)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def closed(self):
        return self.reader.at_eof() or self.writer.is_closing()


async def exchange(conn, path, host, auth):
    """One GET on conn; returns (status, x_cache, keep_alive)."""
    conn.writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n".encode()
    )
    await conn.writer.drain()
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    if "content-length" not in hdrs:
        raise RuntimeError("answer without Content-Length")
    await conn.reader.readexactly(int(hdrs["content-length"]))
    return status, hdrs.get("x-cache"), hdrs.get("connection", "").lower() != "close"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--ids", type=int, required=True)
    ap.add_argument("--auth", required=True)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=300)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.count + 64 and (hard == resource.RLIM_INFINITY or hard >= a.count + 64):
        resource.setrlimit(resource.RLIMIT_NOFILE, (a.count + 64, hard))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + a.max_seconds
    conns = []
    stats = {"ok": 0, "hit": 0, "failed": 0, "retries": 0}
    first_error = []
    sem = asyncio.Semaphore(a.concurrency)
    hostport = f"{a.host}:{a.port}"

    def note_error(e):
        stats["failed"] += 1
        if not first_error:
            first_error.append(f"{type(e).__name__}:{e}".replace(" ", "_")[:120])

    async def open_one(i):
        async with sem:
            for attempt in range(4):
                try:
                    r, w = await asyncio.open_connection(a.host, a.port)
                    break
                except OSError as e:
                    if attempt == 3:
                        note_error(e)
                        return
                    stats["retries"] += 1
                    await asyncio.sleep(0.05 * (attempt + 1))
            conn = Conn(r, w)
            try:
                status, xcache, keep = await exchange(
                    conn, "/v1/responses/" + id_of(i % a.ids), hostport, a.auth
                )
            except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as e:
                note_error(e)
                w.close()
                return
            if status != 200 or not keep:
                note_error(RuntimeError(f"status {status} keep-alive {keep}"))
                w.close()
                return
            stats["ok"] += 1
            stats["hit"] += xcache == "HIT"
            conns.append(conn)

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(a.count)))
    err = f" error={first_error[0]}" if first_error else ""
    say(
        f"OPENED open={len(conns)} ok={stats['ok']} hit={stats['hit']} failed={stats['failed']} "
        f"retries={stats['retries']} secs={time.monotonic() - t0:.2f}{err}"
    )

    stop = asyncio.Event()
    again = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, again.set)

    async def second_round():
        t = time.monotonic()
        live = [c for c in conns if not c.closed()]
        st = {"ok": 0, "hit": 0, "failed": 0}

        async def one(k, c):
            async with sem:
                try:
                    status, xcache, _ = await exchange(
                        c, "/v1/responses/" + id_of((k + 7) % a.ids), hostport, a.auth
                    )
                except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError):
                    st["failed"] += 1
                    return
                st["ok"] += status == 200
                st["hit"] += xcache == "HIT"
                st["failed"] += status != 200

        await asyncio.gather(*(one(k, c) for k, c in enumerate(live)))
        say(
            f"AGAIN open={len(live)} ok={st['ok']} hit={st['hit']} closed={len(conns) - len(live)} "
            f"failed={st['failed']} secs={time.monotonic() - t:.2f}"
        )

    while not stop.is_set():
        left = deadline - loop.time()
        if left <= 0:
            say("TIMEOUT")
            return 3
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(again.wait())]
        await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if again.is_set() and not stop.is_set():
            again.clear()
            await second_round()

    closed = sum(c.closed() for c in conns)
    say(f"DONE open={len(conns) - closed} closed={closed}")
    for c in conns:
        c.writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
