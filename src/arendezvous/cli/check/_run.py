"""The runner: one ``arendezvous check`` from options to exit status.

It starts the server (``--start``), picks fresh run ids, runs the clients -- as tasks
(:mod:`._tasks`) or as processes a writer killer SIGKILLs (:mod:`._writer_killer`) -- with the
progress display, then prints the summary, checks the history for linearizability and prints the
verdict (:mod:`._report`).
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

import anyio

from ..._errors import RendezvousError
from ...backends._urlparse import redact_url
from ...testing.history import merge
from ...testing.linearizability import check
from ._faults import FaultReport
from ._handles import Opener
from ._options import CheckOptions, UsageError
from ._progress import Display, Progress
from ._report import summary_lines, verdict_lines
from ._servers import SERVERS, Server, server_environment, start_server, with_timeout
from ._tasks import run_tasks
from ._tokens import StoreTokenCodec
from ._writer_killer import WriterKiller

__all__ = ("run_check",)


def run_check(
    options: CheckOptions,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    opener: Opener | None = None,
) -> int:
    """Run one check; print the summary to *out* and progress to *err*; return the exit status.

    :param opener: open a backend as ``opener(url, run_id)`` instead of by URL scheme (for
        backends that have none; in-process clients only, so not with ``kill-writer``).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        options.validate()
        if opener is not None and options.faults == "kill-writer":
            raise UsageError("an opener serves in-process clients; kill-writer runs processes")
    except UsageError as exc:
        print(f"arendezvous check: {exc}", file=err)
        return 2
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**32)
    # Fresh run ids: a run holding state from before would not start empty, as the check assumes.
    prefix = f"check-{uuid.uuid4().hex[:12]}"
    run_ids = [f"{prefix}-{index}" for index in range(options.runs)]
    progress = Progress(options.ops, options.faults)
    report = FaultReport()
    server: Server | None = None
    server_name = None
    directory: Path | None = None
    display: Display | None = None
    environment = ExitStack()
    try:
        try:
            if options.start is not None:
                kind = SERVERS[options.start]
                server_name = kind.program
                print(f"starting {server_name} on 127.0.0.1 ...", file=err, flush=True)
                server = start_server(options.start)
                # The clients (tasks here, or processes inheriting the environment) find what
                # the URL does not carry, such as where the credentials are.
                environment.enter_context(server_environment(server))
                url = with_timeout(server.url, kind.call_timeout)
            else:
                assert options.url is not None
                url = options.url
            print(
                f"arendezvous check: {redact_url(url)}, {options.clients} clients on "
                f"{options.runs} runs, {options.ops} ops, faults {options.faults}"
                + (f" (up to {options.fault_count})" if options.faults != "none" else "")
                + f", seed {seed}",
                file=out,
                flush=True,
            )
            display = Display(err, progress)
            started = time.monotonic()
            if options.faults == "kill-writer":
                directory = Path(tempfile.mkdtemp(prefix="arendezvous-check-"))
                killer = WriterKiller(options, url, run_ids, seed, progress, report, directory)
                anyio.run(killer.run, display, backend=options.event_loop)
                seconds = time.monotonic() - started
                display.finish()
                files = [path for path in killer.histories if path.exists() and path.stat().st_size]
                history = merge(*files, codec=StoreTokenCodec())
            else:
                history = anyio.run(
                    run_tasks,
                    options,
                    url,
                    run_ids,
                    seed,
                    progress,
                    display,
                    report,
                    server,
                    opener,
                    backend=options.event_loop,
                )
                seconds = time.monotonic() - started
                display.finish()
        finally:
            if display is not None:
                display.end_line()  # before any error message, and on Ctrl-C
    except (UsageError, ValueError, ImportError, FileNotFoundError, RuntimeError) as exc:
        print(f"arendezvous check: {exc}", file=err)
        return 2
    except RendezvousError as exc:
        print(f"arendezvous check: {type(exc).__name__}: {exc}", file=err)
        return 2
    finally:
        environment.close()
        if server is not None:
            server.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    for line in summary_lines(history, seconds, report, progress, options, server_name):
        print(line, file=out)
    if options.history is not None:
        # The default codec: tokens the JSON codec cannot write keep their equality within one
        # file through their repr, so plain ``load(path)`` reads it back.
        history.dump(options.history)
        print(f"history     written to {options.history}", file=out)
    print(f"checking {len(history)} operations ...", file=err, flush=True)
    result = check(history, time_budget=options.check_time, explain_budget=options.check_time)
    status, lines = verdict_lines(result, history, report)
    for line in lines:
        print(line, file=out)
    print(f"seed        {seed} (--seed {seed} repeats the choices; timing differs)", file=out)
    out.flush()
    return status
