"""The physical limits every scenario is compared with, measured on the same machine in the same run.

- bcrypt: hashes per second at the configured cost with one thread per CPU the process may use, the most
  logins or registrations per second any code could do here.
- a bare Starlette endpoint returning a constant, served by ``authsvc serve``'s own code with only the
  application swapped: the most requests per second any read route could do here (k6/scenarios/ceiling.js).

``python -m k6.ceilings --port P --workers N`` serves the bare endpoint.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from typing import Any

import bcrypt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.passwords import available_cpus


def bcrypt_rate(cost: int, seconds: float, threads: int | None = None) -> dict[str, float]:
    """Verifies one password against one hash in `threads` threads for about `seconds`.

    bcrypt releases the GIL, so the threads run in parallel as the service's hash pool does; a verify costs
    what a hash costs (both run the key schedule at `cost`). Two rates come out: `rate`, from the CPU time
    each hash took (threads / CPU seconds per hash: what these CPUs can do, whatever else runs on the machine
    meanwhile), and `wall_rate`, hashes done per second of this measurement (lower when other processes
    took CPU from it: the difference is how noisy the machine was).
    """
    threads = threads or available_cpus()
    password = b"bench-password"
    stored = bcrypt.hashpw(password, bcrypt.gensalt(cost))
    counts = [0] * threads
    cpu = [0.0] * threads
    deadline = time.perf_counter() + seconds

    def work(index: int) -> None:
        begun = time.thread_time()
        while time.perf_counter() < deadline:
            bcrypt.checkpw(password, stored)
            counts[index] += 1
        cpu[index] = time.thread_time() - begun

    begun = time.perf_counter()
    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - begun  # includes each thread's last hash past the deadline
    done = sum(counts)
    cpu_per_hash = sum(cpu) / done
    return {"cost": cost, "threads": threads, "hashes": done, "seconds": round(elapsed, 3),
            "rate": threads / cpu_per_hash, "wall_rate": done / elapsed, "cpu_ms_per_hash": 1000 * cpu_per_hash}


async def constant(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/", constant, methods=["GET"])])


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from service import cli

    args = argparse.ArgumentParser(description="serve the bare Starlette ceiling endpoint")
    args.add_argument("--host", default="127.0.0.1")
    args.add_argument("--port", type=int, required=True)
    args.add_argument("--workers", type=int, default=1)
    options = args.parse_args(argv)
    # `authsvc serve` itself, with only the application swapped: the same uvicorn settings, logging and worker
    # setup, whatever they become
    run = uvicorn.run

    def run_bare(app: object, **settings: Any) -> None:
        run("k6.ceilings:bare_app", **settings)

    uvicorn.run = run_bare
    try:
        cli.serve(options.host, options.port, options.workers)
    finally:
        uvicorn.run = run


if __name__ == "__main__":
    main()
