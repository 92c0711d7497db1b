#!/usr/bin/env python3
"""Open N keep-alive connections to a loopback HTTP server, one request each, and hold them.

    hold_conns.py --port 19101 -n 2000 --host-header backend.bench [--hold 12] [--ready-file F]
    hold_conns.py --port 19206 -n 2000 --cert c.crt --key c.key --ca ca.crt   # mTLS

With --cert/--key/--ca every connection is TLS with that client certificate (ALPN http/1.1,
the server checked against --ca, its name not checked: mesh certificates name SPIFFE IDs).
Writes "READY <open> errors=<n>" to stdout and --ready-file once all are open and answered,
holds them --hold seconds, then closes everything. Loopback targets only; source addresses
are spread over 127.0.0.1-4 so the ephemeral port range is never the limit.
"""
import argparse
import asyncio
import resource
import ssl
import sys
import time


async def open_one(a, src, tls, sem):
    async with sem:
        r, w = await asyncio.open_connection(
            a.host, a.port, local_addr=(src, 0), ssl=tls, server_hostname="" if tls else None
        )
        w.write(f"GET / HTTP/1.1\r\nHost: {a.host_header}\r\n\r\n".encode())
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"status {status.decode()}")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await r.readexactly(length)
        return w


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--host-header", default="localhost")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("--hold", type=float, default=12.0)
    ap.add_argument("--ready-file")
    ap.add_argument("--parallel", type=int, default=100)
    a = ap.parse_args()
    if not a.host.startswith("127."):
        sys.exit("loopback targets only")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tls = None
    if a.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.load_verify_locations(a.ca)
        tls.load_cert_chain(a.cert, a.key)
        tls.set_alpn_protocols(["http/1.1"])
    sem = asyncio.Semaphore(a.parallel)
    sources = [f"127.0.0.{i}" for i in range(1, 5)]
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(open_one(a, sources[i % 4], tls, sem) for i in range(a.n)), return_exceptions=True
    )
    conns = [x for x in results if not isinstance(x, BaseException)]
    errors = [x for x in results if isinstance(x, BaseException)]
    msg = f"READY {len(conns)} errors={len(errors)} open_s={time.monotonic() - t0:.1f}"
    if errors:
        msg += f" first_error={errors[0]!r}"
    print(msg, flush=True)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write(msg + "\n")
    await asyncio.sleep(a.hold)
    for w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
