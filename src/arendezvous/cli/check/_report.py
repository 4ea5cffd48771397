"""The report a check prints at the end: the summary of the run and the verdict on its history."""

from __future__ import annotations

from collections import Counter

from ...testing.history import History
from ...testing.linearizability import CheckResult
from ._faults import FaultReport
from ._options import CheckOptions
from ._progress import Progress

__all__ = ("summary_lines", "verdict_lines")


def summary_lines(
    history: History,
    seconds: float,
    report: FaultReport,
    progress: Progress,
    options: CheckOptions,
    server_name: str | None,
) -> list[str]:
    """The summary's lines: operations, outcomes, errors, faults, time limit, crashes."""
    kinds = Counter(op.kind for op in history)
    outcomes = Counter(op.outcome for op in history)
    writes = [op for op in history if op.kind == "write" and op.outcome == "ok"]
    won = sum(1 for op in writes if op.written)
    rate = len(history) / seconds if seconds > 0 else 0.0
    lines = [
        f"operations  {len(history)} in {seconds:.1f} s ({rate:.0f}/s): {kinds['read']} reads, "
        f"{kinds['write']} writes, {kinds['wait']} waits",
        f"outcomes    ok {outcomes['ok']} (writes won {won}, lost {len(writes) - won})  "
        f"fail {outcomes['fail']}  unknown {outcomes['unknown']}",
    ]
    if progress.errors:
        common = ", ".join(f"{name} x{count}" for name, count in progress.errors.most_common(4))
        lines.append(f"errors      {common}")
    if options.faults == "kill-server":
        if report.downtimes:
            down = f"down {min(report.downtimes):.2f}-{max(report.downtimes):.2f} s each"
        else:
            down = "not restarted"
        lines.append(
            f"faults      {server_name} SIGKILLed {report.server_kills} times and restarted "
            f"{len(report.downtimes)} ({down})"
        )
    elif options.faults == "kill-writer":
        killed = set(report.killed_clients)
        in_flight = {
            op.client
            for op in history
            if op.client in killed and op.ret is None and op.kind == "write"
        }
        at_write = len(killed) - report.random_moment_kills
        lines.append(
            f"faults      {len(killed)} client processes SIGKILLed ({at_write} as a write "
            f"started, {report.random_moment_kills} at a random moment)"
        )
        lines.append(
            f"            {len(in_flight)} died with a write in flight (outcome unknown); "
            f"{report.replacements} replacements took over the rest of their operations"
        )
    else:
        lines.append("faults      none")
    if report.timed_out_clients:
        lines.append(
            f"time limit  reached: {len(report.timed_out_clients)} clients stopped, "
            "their calls in flight count as unknown"
        )
    elif progress.started < options.ops:
        lines.append(f"time limit  reached after {progress.started} of {options.ops} operations")
    for crash in report.crashed:
        lines.append(f"crashed     {crash}")
    return lines


def verdict_lines(
    result: CheckResult, history: History, report: FaultReport
) -> tuple[int, list[str]]:
    """The exit status and the lines that say it."""
    stats = result.stats
    lines = [
        f"history     {stats.operations} operations on {stats.keys} runs, up to "
        f"{stats.max_concurrency} concurrent; checked in {stats.seconds:.2f} s"
    ]
    if result.verdict == "violation":
        if result.explanation is None:
            lines.append(f"verdict     VIOLATION: {result.reason}")
        else:
            lines.append("verdict     VIOLATION: the history is not linearizable")
            lines.extend(f"  {line}" for line in str(result.explanation).splitlines())
        return 1, lines
    if result.verdict == "unknown":
        lines.append(f"verdict     UNKNOWN: {result.reason} (raise --check-time)")
        return 2, lines
    if report.crashed:
        lines.append("verdict     UNKNOWN: linearizable, but the run is incomplete (see crashed)")
        return 2, lines
    if not any(op.outcome == "ok" for op in history):
        lines.append("verdict     UNKNOWN: no call succeeded; is the store reachable?")
        return 2, lines
    lines.append("verdict     OK: linearizable")
    return 0, lines
