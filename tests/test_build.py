"""The portable build: what build_info reports, how a SIMD path is chosen and forced, and
that nothing outside the run-time-dispatched functions needs more than the baseline CPU."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hsafast
from hsafast.info import build_info, use_simd

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["scalar", "avx2", "avx512"]
X86 = platform.machine() in ("x86_64", "AMD64")


def run_python(code: str, env: dict[str, str] | None = None, prefix: list[str] | None = None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*(prefix or []), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT / "tests",
        timeout=900,
    )


def test_build_info_reports_compiled_supported_and_active_paths() -> None:
    info = build_info()
    assert info["simd"] in info["simd_supported"]
    assert info["simd_supported"][0] == "scalar"
    assert set(info["simd_supported"]) <= set(info["simd_compiled"]) <= set(PATHS)
    assert info["simd_supported"] == [
        p for p in info["simd_compiled"] if p in info["simd_supported"]
    ]
    assert isinstance(info["march_native"], bool)
    if X86 and not info["march_native"]:
        assert info["simd_compiled"] == PATHS
        assert info["simd_baseline"] == "sse2", "a portable build must not assume more than SSE2"
    if not info["simd_requested"]:  # the widest supported path runs unless one is asked for
        assert info["simd"] == info["simd_supported"][-1]


def test_installation_info_includes_the_build() -> None:
    assert hsafast.installation_info()["build"]["simd"] == build_info()["simd"]


def test_use_simd_forces_and_restores() -> None:
    before = build_info()["simd"]
    with use_simd("scalar") as active:
        assert active == "scalar" == build_info()["simd"]
    assert build_info()["simd"] == before


def test_bad_or_unavailable_paths_are_refused() -> None:
    before = build_info()["simd"]
    with pytest.raises(ValueError, match="unknown SIMD path 'sse9'"), use_simd("sse9"):
        pass
    missing = [p for p in PATHS if p not in build_info()["simd_supported"]]
    for path in missing:
        with pytest.raises(ValueError, match=path), use_simd(path):
            pass
    assert build_info()["simd"] == before


def test_environment_variable_chooses_the_path() -> None:
    code = (
        "from hsafast.info import build_info; i = build_info(); "
        "print(i['simd'], i['simd_requested'])"
    )
    for path in build_info()["simd_supported"]:
        out = run_python(code, {"HSAFAST_SIMD": path})
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [path, path]


def test_environment_variable_with_a_bad_value_fails_the_import_clearly() -> None:
    out = run_python("import hsafast._native", {"HSAFAST_SIMD": "avx9000"})
    assert out.returncode != 0
    assert "HSAFAST_SIMD=avx9000 is not a SIMD path (scalar, avx2 or avx512)" in out.stderr
    assert "Rebuild" not in out.stderr  # the build is fine; only the variable is wrong


# ---- nothing outside the dispatched functions uses instructions beyond the baseline ----

# VEX/EVEX-encoded (AVX, AVX2, FMA, AVX-512) mnemonics start with "v"; BMI and the other
# x86-64-v3 scalar instructions are listed. tzcnt is not: for __builtin_ctz GCC emits
# "rep bsf", which objdump prints as tzcnt and which CPUs without BMI1 run as bsf (same result
# for the non-zero inputs that ctz allows).
BEYOND_BASELINE = re.compile(
    r"^(v[a-z0-9]+|shlx|shrx|sarx|rorx|andn|bzhi|pdep|pext|blsr|blsi|blsmsk|lzcnt|movbe|"
    r"popcnt|kmov[bwdq]|kand[bwdq]?|kor[bwdq]?)$"
)
# Variants named name_avx2 / name_avx512, run_avx2<...>, or kept in a namespace avx2 / avx512.
DISPATCHED = re.compile(r"_avx(2|512)[(<]|\bavx(2|512)::")


def core_archive() -> Path | None:
    """The static core library of the newest build of this checkout, if it is here."""
    archives = sorted(ROOT.glob("build/*/libhsafast_core.a"), key=lambda p: p.stat().st_mtime)
    return archives[-1] if archives else None


def functions_beyond_baseline(archive: Path) -> dict[str, set[str]]:
    """Function name -> mnemonics beyond SSE2 that it contains (objdump, demangled)."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", str(archive)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, set[str]] = {}
    name = ""
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            name = header.group(1)
            continue
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].strip().endswith(":"):
            mnemonic = parts[1].split()[0] if parts[1].split() else ""
            if BEYOND_BASELINE.match(mnemonic):
                found.setdefault(name, set()).add(mnemonic)
    return found


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="needs x86-64 and objdump")
def test_only_dispatched_functions_use_avx() -> None:
    archive = core_archive()
    if archive is None:
        pytest.skip("no build folder with libhsafast_core.a (not an in-tree build)")
    cache = (archive.parent / "CMakeCache.txt").read_text()
    if "HSAFAST_NATIVE_ARCH:BOOL=ON" in cache:
        pytest.skip("built with HSAFAST_NATIVE_ARCH=ON: tuned for this CPU on purpose")
    found = functions_beyond_baseline(archive)
    leaks = {name: sorted(m) for name, m in found.items() if not DISPATCHED.search(name)}
    assert not leaks, f"functions outside the SIMD dispatch use AVX/BMI instructions: {leaks}"
    dispatched = " ".join(found)
    for kernel in ("stats_rows_avx512", "stats_rows_avx2", "pool_rows_avx2", "pool_rows_avx512"):
        assert kernel in dispatched, f"{kernel} has no AVX instructions: the dispatch is broken"


# ---- the kernels on emulated CPUs without AVX-512 and without AVX ----

QEMU = shutil.which("qemu-x86_64")


@pytest.mark.slow
@pytest.mark.skipif(not X86 or QEMU is None, reason="needs qemu-x86_64 (apt-get install qemu-user)")
@pytest.mark.parametrize(("cpu", "expected"), [("Nehalem", "scalar"), ("Haswell-v4", "avx2")])
def test_kernels_on_an_older_emulated_cpu(cpu: str, expected: str) -> None:
    """A Nehalem (SSE4.2, no AVX) and a Haswell (AVX2, no AVX-512) run the extension: any
    instruction beyond them outside the dispatch would end the process with SIGILL."""
    code = (
        "import simd_checks; from hsafast.info import build_info, use_simd\n"
        "print(build_info()['simd']); simd_checks.check_all()\n"
        "try:\n    use_simd('avx512').__enter__()\n"
        "except ValueError as e:\n"
        "    print('refused' if 'cannot run the avx512' in str(e) else e)\n"
    )
    env = {"HSAFAST_SIMD": ""}
    out = run_python(code, env, prefix=[QEMU, "-cpu", cpu])
    assert out.returncode == 0, f"under {cpu}: exit {out.returncode}\n{out.stderr[-3000:]}"
    assert out.stdout.split() == [expected, "refused"]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_kernel_test_files_pass_on_each_path(path: str) -> None:
    """The kernels' own test files, whole, with HSAFAST_SIMD forcing the path."""
    if path not in build_info()["simd_supported"]:
        pytest.skip(f"this CPU or build has no {path} path")
    files = ["test_stain_kernel.py", "test_pooling.py", "test_tissue.py"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *files],
        capture_output=True,
        text=True,
        env={**os.environ, "HSAFAST_SIMD": path},
        cwd=ROOT / "tests",
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-3000:]
