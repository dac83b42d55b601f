"""Fixtures of the Python package's tests (tests/plugin/python).

Each torch test runs one case of torch_cases.py in a fresh interpreter, because PyTorch
changes its allocator once per process and before CUDA is initialized. The environment comes
from CTest (tests/plugin/CMakeLists.txt): the simulator as the driver (SWAPALLOC_CUDA_DRIVER,
and as libcuda.so.1 on LD_LIBRARY_PATH), the CUDA runtime shim in LD_PRELOAD, the library
under test in SWAPALLOC_LIBRARY. Cases print one JSON object as their last line.
"""
from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CASES = HERE / "torch_cases.py"

# torch reserves address space generously and a stray kernel-free read of a CUDA tensor
# can make it ask for absurd sizes (notes §5): every case runs under this address limit.
ADDRESS_LIMIT_BYTES = 80 * 10**9


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT_BYTES, ADDRESS_LIMIT_BYTES))


def run_case(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 240):
    """Runs case `name` of torch_cases.py; returns its JSON result, or fails the test with
    the case's output when it exits non-zero."""
    merged = dict(os.environ)
    merged.update(env or {})
    done = subprocess.run(
        [sys.executable, str(CASES), name, *args],
        env=merged,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_address_space,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"case {name} exited with {done.returncode}\n--- stdout\n{done.stdout}\n"
            f"--- stderr\n{done.stderr}"
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"case {name} printed no result\n{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])


@pytest.fixture
def case():
    """run_case, as a fixture."""
    return run_case


def pytest_configure(config):
    missing = [name for name in ("SWAPALLOC_LIBRARY", "SWAPALLOC_CUDA_DRIVER") if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            f"set {', '.join(missing)} (CTest does: run these tests with ctest -R PluginPython)"
        )
