"""`python -m swapalloc ps` and `top`: the processes using swapalloc on this machine, their
pools and each device's pressure, read from the stats files the library publishes (at most
once a second, mode 0600: plugin/src/stats_publisher.hpp). Files of processes that no longer
exist are removed."""
from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any


def stats_directory() -> pathlib.Path:
    """Where the library publishes: $SWAPALLOC_STATS_DIR, else $XDG_RUNTIME_DIR/swapalloc,
    else /dev/shm/swapalloc-<uid> (the library's rule)."""
    named = os.environ.get("SWAPALLOC_STATS_DIR")
    if named:
        return pathlib.Path(named)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return pathlib.Path(runtime) / "swapalloc"
    return pathlib.Path(f"/dev/shm/swapalloc-{os.getuid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with our pid file: alive
        return True
    return True


def processes(directory: pathlib.Path | None = None) -> list[dict[str, Any]]:
    """The published records of live processes, by pid; stale files are removed."""
    directory = directory or stats_directory()
    found = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced, or cut short: skip this round
            continue
        record["age_s"] = max(0.0, time.time() - record.get("updated", 0.0))
        found.append(record)
    return found


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render(records: list[dict[str, Any]]) -> str:
    """The ps table of `records` (processes()), one block per process and device."""
    if not records:
        return f"no process is using swapalloc (looked in {stats_directory()})"
    lines = []
    for record in records:
        stale = record["age_s"] > 3 * record.get("interval_s", 1.0) + 5
        command = record.get("command", "")
        if len(command) > 60:  # the end names the script and its arguments
            command = "..." + command[-57:]
        lines.append(
            f"PID {record['pid']}  {command}"
            f"  (updated {_ago(record['age_s'])}{', stale' if stale else ''})"
        )
        for device in record["stats"]["devices"]:
            pressure = device.get("pressure", {})
            use = pressure.get("use_fraction")
            lines.append(
                f"  device {device['device']}: {pressure.get('level', '-')}"
                + (f", {use:.0%} of {_bytes(pressure.get('limit_bytes', 0))}" if use is not None else "")
                + f", this process {_bytes(pressure.get('own_bytes', 0))}"
            )
            lines.append(
                f"    {'POOL':<20} {'PRIORITY':<9} {'RESIDENT':>11} {'EVICTED':>11} "
                f"{'HOST':>11} {'ACTIVE':>6}  LAST USE"
            )
            for pool in device["pools"]:
                lines.append(
                    f"    {pool['name'][:20]:<20} {pool.get('priority', '-'):<9} "
                    f"{_bytes(pool['reserved_bytes']):>11} {_bytes(pool['evicted_bytes']):>11} "
                    f"{_bytes(pool['host_bytes']):>11} {'yes' if pool.get('active') else 'no':>6}  "
                    f"{_ago(pool.get('last_use_s_ago'))}"
                )
    return "\n".join(lines)


def ps(as_json: bool = False) -> str:
    records = processes()
    if as_json:
        return json.dumps(records)
    return render(records)


def top(interval: float = 1.0, iterations: int | None = None) -> None:
    """Redraws ps every `interval` seconds until interrupted (or `iterations` times)."""
    done = 0
    try:
        while iterations is None or done < iterations:
            text = render(processes())
            clear = "\x1b[H\x1b[2J" if os.isatty(1) else ""
            print(f"{clear}swapalloc top  {time.strftime('%H:%M:%S')}\n{text}", flush=True)
            done += 1
            if iterations is None or done < iterations:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
