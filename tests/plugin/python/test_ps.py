"""`python -m swapalloc ps` and `top` against a running torch process (torch_cases.py serve),
the private stats file it publishes, and the cleanup of a dead process's file."""
import json
import os
import pathlib
import stat
import subprocess
import sys
import time

from conftest import CASES

MiB = 1 << 20


def _swapalloc(*args, env):
    done = subprocess.run([sys.executable, "-m", "swapalloc", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_ps_lists_a_running_process_and_its_pools_and_the_file_goes_at_exit(tmp_path):
    env = dict(os.environ, SWAPALLOC_STATS_DIR=str(tmp_path))
    server = subprocess.Popen([sys.executable, str(CASES), "serve"], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert json.loads(server.stdout.readline()) == {"ready": True}
        published = tmp_path / f"{server.pid}.json"
        deadline = time.time() + 10
        while time.time() < deadline:  # the evict happened after the first write
            records = [r for r in json.loads(_swapalloc("ps", "--json", env=env))
                       if r["pid"] == server.pid]
            pools = {p["name"]: p for p in records[0]["stats"]["devices"][0]["pools"]} if records else {}
            if pools.get("flux", {}).get("evicted_bytes"):
                break
            time.sleep(0.2)
        assert stat.S_IMODE(published.stat().st_mode) == 0o600
        assert stat.S_IMODE(tmp_path.stat().st_mode) in (0o700, 0o755)  # made by pytest, or us
        assert pools["sdxl"]["reserved_bytes"] >= 8 * MiB
        assert pools["sdxl"]["priority"] == "high"
        assert pools["flux"]["evicted_bytes"] == 4 * MiB
        assert pools["flux"]["reserved_bytes"] == 0
        text = _swapalloc("ps", env=env)
        assert f"PID {server.pid}" in text and "sdxl" in text and "flux" in text
        assert "torch_cases.py serve" in text
        assert "sdxl" in _swapalloc("top", "--iterations", "1", env=env)
        server.stdin.write("done\n")
        server.stdin.flush()
        assert server.wait(timeout=60) == 0
        assert not published.exists(), "removed at exit"
    finally:
        if server.poll() is None:
            server.kill()


def test_ps_removes_the_file_of_a_dead_process_and_says_when_none_is_left(tmp_path):
    env = dict(os.environ, SWAPALLOC_STATS_DIR=str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"{gone.pid}.json"
    stale.write_text(json.dumps({"pid": gone.pid, "updated": 0, "stats": {"devices": []}}))
    text = _swapalloc("ps", env=env)
    assert "no process is using swapalloc" in text
    assert not stale.exists()
    assert _swapalloc("ps", "--json", env=env).strip() == "[]"
