"""The training process's memory allocator (`keras_efficient3d.allocators`): which library
each choice preloads, the environment it starts under, and a real restart under a preloaded
library."""

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from helpers import stand_in_allocator
from keras_efficient3d import allocators

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")


def _library(folder, name):
    path = folder / name
    path.write_bytes(b"\x7fELF")
    return str(path)


@linux
def test_auto_takes_tcmalloc_then_jemalloc_then_mimalloc_on_jax_and_mimalloc_on_torch(tmp_path):
    dirs = [str(tmp_path)]
    assert allocators.resolve("auto", "jax", dirs) is None
    mimalloc = _library(tmp_path, "libmimalloc.so.3")
    assert allocators.resolve("auto", "jax", dirs) == ("mimalloc", mimalloc)
    jemalloc = _library(tmp_path, "libjemalloc.so.2")
    assert allocators.resolve("auto", "jax", dirs) == ("jemalloc", jemalloc)
    tcmalloc = _library(tmp_path, "libtcmalloc_minimal.so.4")
    assert allocators.resolve("auto", "jax", dirs) == ("tcmalloc", tcmalloc)
    assert allocators.resolve("auto", "tensorflow", dirs) is None
    # PyTorch: mimalloc only (under tcmalloc it measured no faster)
    assert allocators.resolve("auto", "torch", dirs) == ("mimalloc", mimalloc)
    os.remove(mimalloc)
    assert allocators.resolve("auto", "torch", dirs) is None
    assert allocators.resolve("system", "jax", dirs) is None
    # asked for by name: on every backend
    assert allocators.resolve("jemalloc", "tensorflow", dirs) == ("jemalloc", jemalloc)


@linux
def test_what_cannot_be_preloaded_is_one_clear_error(tmp_path):
    with pytest.raises(allocators.AllocatorError, match="tcmalloc is not installed: install one "
                       r"\(pip install cmeel-mimalloc, or keras_efficient3d\[jax\]; "
                       "Debian/Ubuntu: apt install libtcmalloc-minimal4"):
        allocators.resolve("tcmalloc", "jax", [str(tmp_path)])
    with pytest.raises(allocators.AllocatorError, match="no such file"):
        allocators.resolve(str(tmp_path / "libnothing.so"), "jax")
    with pytest.raises(allocators.AllocatorError, match="expected one of auto, system, tcmalloc, "
                       "jemalloc, mimalloc or a library's path"):
        allocators.resolve("hoard", "jax")


def test_preload_env_puts_the_allocator_first_with_its_settings():
    env = allocators.preload_env("jemalloc", "/lib/libjemalloc.so.2",
                                 {"LD_PRELOAD": "/lib/other.so /lib/libjemalloc.so.2", "A": "1"})
    assert env["LD_PRELOAD"] == "/lib/libjemalloc.so.2 /lib/other.so"
    assert env["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    assert env[allocators.ENV_MARKER] == "/lib/libjemalloc.so.2" and env["A"] == "1"
    env = allocators.preload_env("tcmalloc", "/lib/libtcmalloc_minimal.so.4",
                                 {"MALLOC_CONF": "keep"})
    assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4"
    assert env["MALLOC_CONF"] == "keep"  # the user's own settings win
    env = allocators.preload_env("mimalloc", "/site/cmeel.prefix/lib/libmimalloc.so.3", {})
    assert env["MIMALLOC_PURGE_DELAY"] == "-1" and "MALLOC_CONF" not in env


def test_the_environment_s_own_folders_come_first():
    dirs = allocators._environment_dirs()
    assert dirs[0] == os.path.join(sys.prefix, "lib")
    # where pip's cmeel-mimalloc wheel puts the library
    site = sysconfig.get_paths()["purelib"]
    assert os.path.join(site, "cmeel.prefix", "lib") in dirs


def _second_block_faults(env):
    """Minor page faults of mallocing and touching a 96 MB block after one was freed, in a
    process started with `env`: what XLA's step does to its temporaries."""
    script = textwrap.dedent("""
        import ctypes, resource
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        size = 96 << 20
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    return int(proc.stdout)


@linux
def test_pip_s_mimalloc_keeps_a_freed_block_that_glibc_maps_afresh():
    # The jax extra installs cmeel-mimalloc (so does CI's dev extra): auto finds it there
    # when no system allocator is installed, and under it the second 96 MB block is the
    # first one again, where glibc's maps and faults in ~24,600 new pages.
    path = allocators.find("mimalloc", allocators._environment_dirs())
    assert path, "cmeel-mimalloc is installed (keras_efficient3d[jax] or [dev])"
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    plain = _second_block_faults(base)
    kept = _second_block_faults(allocators.preload_env("mimalloc", path, base))
    assert plain > 20000, plain  # 96 MB in 4-KB pages: 24,576
    assert kept < 1000, kept


def test_the_backend_extras_install_mimalloc_on_linux_x86_64_and_arm64():
    # the wheels pip has (manylinux x86_64 and aarch64): INSTALL_HINT's extras hold there
    from packaging.requirements import Requirement

    requirements = [Requirement(r) for r in importlib.metadata.requires("keras_efficient3d")]
    for extra in ("jax", "torch", "dev"):
        mimalloc = [r for r in requirements if r.name == "cmeel-mimalloc" and r.marker.evaluate(
            {"extra": extra, "platform_system": "Linux", "platform_machine": "x86_64"})]
        assert mimalloc, extra
        for machine, wanted in (("x86_64", True), ("aarch64", True), ("ppc64le", False)):
            env = {"extra": extra, "platform_system": "Linux", "platform_machine": machine}
            assert any(r.marker.evaluate(env) for r in mimalloc) is wanted, (extra, machine)
        env = {"extra": extra, "platform_system": "Darwin", "platform_machine": "arm64"}
        assert not any(r.marker.evaluate(env) for r in mimalloc), extra


@linux
def test_reexec_restarts_once_and_says_why(tmp_path):
    calls = []
    tcmalloc = _library(tmp_path, "libtcmalloc_minimal.so.4")
    logged = []
    allocators.reexec("auto", "jax", log=logged.append, environ={},
                      execve=lambda *args: calls.append(args), library_dirs=[str(tmp_path)])
    (program, argv, env), = calls
    assert program == sys.executable and argv[0] == sys.executable
    assert env["LD_PRELOAD"] == tcmalloc and env[allocators.ENV_MARKER] == tcmalloc
    assert logged == [f"memory allocator: restarting under tcmalloc ({tcmalloc}); "
                      "--allocator=system to stay with glibc's"]
    # once restarted: no second restart; a library the linker did not load is said
    line = allocators.reexec("auto", "jax", execve=lambda *args: calls.append(args),
                             environ=env, library_dirs=[str(tmp_path)])
    assert len(calls) == 1
    assert line.startswith(f"warning: memory allocator {tcmalloc} was not loaded")
    # a library this process has mapped already (preloaded by the user): no restart
    mapped = next(line.split()[-1] for line in open("/proc/self/maps", encoding="utf-8")
                  if ".so" in line.split()[-1])
    line = allocators.reexec(mapped, "jax", execve=lambda *args: calls.append(args), environ={})
    assert line == f"memory allocator: {os.path.basename(mapped)} ({mapped})" and len(calls) == 1
    # nothing to preload: JAX users hear how to get it, others nothing
    empty = [str(tmp_path / "none")]
    line = allocators.reexec("auto", "jax", execve=lambda *args: calls.append(args),
                             environ={}, library_dirs=empty)
    assert "JAX trains faster with tcmalloc, jemalloc or mimalloc" in line and len(calls) == 1
    line = allocators.reexec("auto", "torch", execve=lambda *args: calls.append(args),
                             environ={}, library_dirs=empty)
    assert "PyTorch trains faster with mimalloc" in line and "pip install cmeel-mimalloc" in line
    assert allocators.reexec("auto", "tensorflow", environ={}, library_dirs=empty,
                             execve=lambda *args: calls.append(args)) is None
    # a symlink to it is the library too (the maps list real paths); so is its soname
    link = tmp_path / "liblink.so"
    link.symlink_to(mapped)
    assert allocators.loaded(str(link)) and allocators.loaded(os.path.basename(mapped))
    assert not allocators.loaded(str(tmp_path / "libtcmalloc_minimal.so.4"))
    # the marker of a parent's restart does not stand for this process's own choice
    inherited = {allocators.ENV_MARKER: mapped, "LD_PRELOAD": mapped}
    line = allocators.reexec("system", "jax", execve=lambda *args: calls.append(args),
                             environ=inherited)
    assert line.startswith(f"warning: memory allocator {os.path.basename(mapped)} ({mapped}) "
                           "is preloaded by this process's environment") and len(calls) == 1
    allocators.reexec("auto", "jax", execve=lambda *args: calls.append(args),
                      environ={allocators.ENV_MARKER: str(tmp_path / "other.so")},
                      library_dirs=[str(tmp_path)])
    assert len(calls) == 2 and calls[1][2][allocators.ENV_MARKER] == tcmalloc


@linux
def test_a_real_restart_runs_under_the_preloaded_library(tmp_path):
    # libresolv stands in for an allocator: every glibc system has it, preloading it is
    # harmless, and only a preload maps it into the restarted process, where `reexec`
    # reads /proc/self/maps to report it loaded (else its warning).
    library = stand_in_allocator()
    assert library, "glibc's libresolv.so.2 is in the system's library folder"
    assert not allocators.loaded(library), "a bare Python process does not map libresolv"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        from keras_efficient3d import allocators
        line = allocators.reexec(sys.argv[1], "jax")
        print("line:", line)
        print("preload:", os.environ.get("LD_PRELOAD"))
        print("args:", sys.argv[1:])
    """))
    proc = subprocess.run([sys.executable, str(script), library], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    name = os.path.basename(library)
    assert proc.stdout.splitlines() == [
        f"memory allocator: restarting under {name} ({library}); --allocator=system to stay "
        "with glibc's",
        f"line: memory allocator: {name} ({library})",
        f"preload: {library}",
        f"args: [{library!r}]",
    ]


def test_train_py_restarts_under_its_allocator_before_it_says_anything(tmp_path, monkeypatch,
                                                                        capsys):
    """A note of train.py's (a flag --pretrained leaves unread) came twice when the run
    restarted under its allocator: once from the process replaced, once from the new one.
    The restart comes first now, so what the first process said is nothing."""
    import runpy

    said_before_restart = []

    def reexec(choice, backend, **kwargs):  # the restarted process: the marker set, no restart
        said_before_restart.append(capsys.readouterr().err)
        return None

    monkeypatch.setattr(allocators, "reexec", reexec)
    missing = tmp_path / "missing.keras"
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--dataset=synthetic", f"--data_root={tmp_path}", f"--pretrained={missing}",
        "--width_mult=0.5", f"--output={tmp_path / 'run'}", "--allocator=system"])
    from absl import flags

    defined = set(flags.FLAGS)
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(os.path.join(ROOT, "training", "train.py"), run_name="__main__")
    finally:  # the program's flags out of absl's global FLAGS again, for the tests after it
        for name in set(flags.FLAGS) - defined:
            delattr(flags.FLAGS, name)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert said_before_restart == [""]
    assert err.count("note: --width_mult") == 1, err
    assert "missing.keras" in err.splitlines()[-1]
