"""The memory allocator a training process runs under (Linux): glibc's, or tcmalloc,
jemalloc or mimalloc preloaded.

Why: XLA's CPU runtime allocates a JAX training step's temporaries as one block (101 MB
for ShuffleNetV2 1.0x at batch 4) from one of its worker threads. glibc serves a block
that size from a fresh ``mmap`` and unmaps it when the step frees it (a thread's arena
cannot hold blocks over 64 MB, whatever ``mallopt`` says), so every step the kernel maps
and zeroes ~25,000 new pages: ~27,000 minor faults and 40-70 ms of system time a step.
tcmalloc, and jemalloc and mimalloc with their page purging off, keep the block and hand it
out again. An allocator is chosen before the process starts (``LD_PRELOAD``), so the
training command starts itself again under it (`reexec`), as PyTorch's
``torch.backends.xeon.run_cpu --enable_tcmalloc`` launcher does.

``auto`` (the training command's default) preloads, on JAX, tcmalloc, else jemalloc
(Debian/Ubuntu: ``apt install libtcmalloc-minimal4`` or ``libjemalloc2``), else mimalloc,
the one pip installs (the ``cmeel-mimalloc`` wheel, in the ``jax`` and ``torch`` extras);
on PyTorch, mimalloc, whose kept pages serve the eager kernels' fresh output tensors
(MobileNetV2 1.0x's training step 1.7x faster; under tcmalloc PyTorch measured no faster);
nothing on TensorFlow, which keeps its tensors in its own cache. Not kept (measured no
faster than glibc's): glibc's transparent huge pages for its mapped blocks
(``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``: fewer faults, the kernel's compaction and
zeroing stay) and TBB's malloc proxy (still ~25,000 faults a step).

Only training restarts under an allocator: OpenVINO's ``compile_model`` aborted under
mimalloc and hung under tcmalloc (measured), so deployment commands stay with glibc's.
"""

import ctypes.util
import os
import sys
import sysconfig

__all__ = ["ALLOCATORS", "AUTO", "CHOICES", "ENV_MARKER", "AllocatorError", "check", "find", "loaded",
           "preload_env", "reexec", "resolve"]

# Library file names, most wanted first, and the environment each needs beside the preload.
ALLOCATORS = {
    "tcmalloc": (("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"), {}),
    # jemalloc's default returns pages to the kernel after 10 s of disuse, in pieces that
    # the next step faults in again (measured no faster than glibc): never purge.
    "jemalloc": (("libjemalloc.so.2", "libjemalloc.so.1"),
                 {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
    # mimalloc's default returns freed pages after 10 ms, which the next step faults in
    # again (measured: ~150-330 faults and erratic steps): never purge.
    "mimalloc": (("libmimalloc.so.3", "libmimalloc.so.2", "libmimalloc.so"),
                 {"MIMALLOC_PURGE_DELAY": "-1"}),
}
CHOICES = ("auto", "system") + tuple(ALLOCATORS)
# What `auto` preloads on each Keras backend, most wanted first (measured; README, Backends).
# PyTorch's eager kernels allocate their outputs afresh each call, and glibc maps those
# over its threshold afresh too: under mimalloc MobileNetV2 1.0x trained 1.7x faster;
# under tcmalloc PyTorch measured no faster. TensorFlow keeps its own cache: none (its
# plain fit calls ran slower under mimalloc).
AUTO = {"jax": ("tcmalloc", "jemalloc", "mimalloc"), "torch": ("mimalloc",)}
# Set in the restarted process: the allocator already chosen (no second restart).
ENV_MARKER = "KERAS_EFFICIENT3D_ALLOCATOR"
INSTALL_HINT = ("install one (pip install cmeel-mimalloc, or keras_efficient3d[jax]; "
                "Debian/Ubuntu: apt install libtcmalloc-minimal4 or libjemalloc2), or pass "
                "a library's path")
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                 "/usr/lib", "/usr/local/lib", "/lib/x86_64-linux-gnu", "/lib64")


class AllocatorError(ValueError):
    """An allocator that was asked for is not installed, or not a file."""


def _environment_dirs():
    """This Python environment's library folders: its ``lib`` (conda's, a wheel's data
    files) and the ``cmeel.prefix/lib`` of its site-packages (where the ``cmeel-mimalloc``
    wheel puts libmimalloc)."""
    dirs = [os.path.join(sys.prefix, "lib")]
    paths = sysconfig.get_paths()
    for key in ("platlib", "purelib"):
        folder = os.path.join(paths[key], "cmeel.prefix", "lib")
        if folder not in dirs:
            dirs.append(folder)
    return tuple(dirs)


def find(name, library_dirs=None):
    """The path of allocator `name`'s library (`ALLOCATORS`), else None: the first of its
    file names in `library_dirs` (default: the environment's own folders, then the
    system's), else where the dynamic linker's cache has it."""
    files, _ = ALLOCATORS[name]
    dirs = library_dirs if library_dirs is not None else _environment_dirs() + _LIBRARY_DIRS
    for folder in dirs:
        for file in files:
            path = os.path.join(folder, file)
            if os.path.isfile(path):
                return path
    if library_dirs is None:
        # a bare soname, which LD_PRELOAD resolves as the linker does
        return ctypes.util.find_library(name.replace("tcmalloc", "tcmalloc_minimal"))
    return None


def loaded(path):
    """Whether the library `path` (or a soname) is mapped into this process (Linux). The
    maps list a library by its real path: a path is compared resolved (a symlink to it
    counts), a soname by file name (``libx.so.4`` is ``libx.so.4`` or ``libx.so.4.*``)."""
    real = os.path.realpath(path) if os.sep in path else None
    base = os.path.basename(path)
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                mapped = fields[5].strip() if len(fields) == 6 else ""
                if not mapped:
                    continue
                if real is not None and mapped == real:
                    return True
                name = os.path.basename(mapped)
                if real is None and (name == base or name.startswith(base + ".")):
                    return True
    except OSError:
        return False
    return False


def resolve(choice, backend, library_dirs=None):
    """The library to preload for `choice` (`CHOICES`, or a library's path) on Keras backend
    `backend`: ``(name, path)``, or None for glibc's own allocator.

    ``auto``: the first installed of `AUTO`'s allocators for `backend` (JAX: tcmalloc,
    jemalloc, mimalloc; PyTorch: mimalloc), else None; None on TensorFlow and off Linux.
    ``system``: None. A name: its library, or `AllocatorError` when it is not installed. A
    path: that file (an `AllocatorError` when it does not exist)."""
    if choice in (None, "", "system"):
        return None
    if choice == "auto":
        if not sys.platform.startswith("linux"):
            return None
        for name in AUTO.get(backend, ()):
            path = find(name, library_dirs)
            if path:
                return name, path
        return None
    if not sys.platform.startswith("linux"):
        raise AllocatorError(f"preloading an allocator works on Linux only (this is "
                             f"{sys.platform}); use system")
    if choice in ALLOCATORS:
        path = find(choice, library_dirs)
        if path is None:
            raise AllocatorError(f"{choice} is not installed: {INSTALL_HINT}")
        return choice, path
    if os.sep in choice or choice.endswith(".so") or ".so." in choice:
        if not os.path.isfile(choice):
            raise AllocatorError("no such file (expected a shared library such as "
                                 "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4)")
        return _name_of(choice), os.path.abspath(choice)
    raise AllocatorError(f"expected one of {', '.join(CHOICES)} or a library's path")


def _name_of(path):
    base = os.path.basename(path)
    for name in ALLOCATORS:
        if name in base:
            return name
    return base


def preload_env(name, path, environ=None):
    """A copy of `environ` (default: this process's) that preloads `path` before whatever
    it already preloads, with the allocator's own settings (jemalloc's purging off, unless
    ``MALLOC_CONF`` is set) and `ENV_MARKER`."""
    env = dict(os.environ if environ is None else environ)
    preloads = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p != path]
    env["LD_PRELOAD"] = " ".join([path] + preloads)
    for key, value in ALLOCATORS.get(name, ((), {}))[1].items():
        env.setdefault(key, value)
    env[ENV_MARKER] = path
    return env


def check(value):
    """A flag validator: `value` names an allocator `resolve` can give (on JAX)."""
    from absl import flags

    try:
        resolve(value, "jax")
    except AllocatorError as err:
        raise flags.ValidationError(str(err)) from None
    return True


def reexec(choice, backend, log=print, execve=os.execve, environ=None, library_dirs=None):
    """Starts this process's command again under the allocator of `choice` (`resolve`), if
    it needs one and does not run under it yet: does not return then. Otherwise returns
    the line to show (None: nothing to say)."""
    environ = os.environ if environ is None else environ
    chosen = resolve(choice, backend, library_dirs)
    marker = environ.get(ENV_MARKER)
    if marker and chosen is not None and chosen[1] == marker:  # restarted under it already
        if not loaded(marker):
            return (f"warning: memory allocator {marker} was not loaded (the dynamic linker "
                    "refused it); running with glibc's")
        return f"memory allocator: {_name_of(marker)} ({marker})"
    if marker and chosen is None and loaded(marker):
        # inherited from a parent restarted under another choice (its LD_PRELOAD)
        return (f"warning: memory allocator {_name_of(marker)} ({marker}) is preloaded by "
                f"this process's environment (LD_PRELOAD), not --allocator={choice}'s "
                "choice; unset LD_PRELOAD for glibc's")
    if chosen is None:
        if choice == "auto" and backend == "jax" and sys.platform.startswith("linux"):
            return ("note: JAX trains faster with tcmalloc, jemalloc or mimalloc (XLA maps its "
                    f"step's temporaries afresh under glibc's allocator): {INSTALL_HINT}")
        if choice == "auto" and backend == "torch" and sys.platform.startswith("linux"):
            return ("note: PyTorch trains faster with mimalloc (its kernels' outputs are "
                    "mapped afresh under glibc's allocator): pip install cmeel-mimalloc, or "
                    "keras_efficient3d[torch]")
        return None
    name, path = chosen
    if loaded(path):  # preloaded by the user already
        return f"memory allocator: {name} ({path})"
    if log:
        log(f"memory allocator: restarting under {name} ({path}); --allocator=system to stay "
            "with glibc's")
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
    execve(sys.executable, [sys.executable] + argv[1:], preload_env(name, path, environ))
    return None
