"""PluginPython.Wheel: `pip wheel` of the repository (what `pip install .` builds, with
scikit-build-core and this CMake project) gives a wheel holding the package and
libswapalloc.so, and that library exports the C ABI. Exit status 0 when it does."""
import ctypes
import pathlib
import subprocess
import sys
import tempfile
import zipfile

root = pathlib.Path(__file__).resolve().parents[3]
with tempfile.TemporaryDirectory() as out:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", out, str(root)], check=True)
    wheels = list(pathlib.Path(out).glob("swapalloc-*.whl"))
    assert len(wheels) == 1, f"one wheel expected, got {wheels}"
    names = zipfile.ZipFile(wheels[0]).namelist()
    for needed in ("swapalloc/__init__.py", "swapalloc/_torch.py", "swapalloc/__main__.py",
                   "swapalloc/libswapalloc.so"):
        assert needed in names, f"{needed} missing from {wheels[0].name}: {names}"
    zipfile.ZipFile(wheels[0]).extract("swapalloc/libswapalloc.so", out)
    library = ctypes.CDLL(str(pathlib.Path(out) / "swapalloc" / "libswapalloc.so"))
    assert library.swapalloc_abi_version() == 1
    print(f"wheel ok: {wheels[0].name}, {len(names)} files")
