"""Atomic writes: a file is written beside its destination, then renamed over it, so that a
crash never leaves half a model or half a JSON file.

Standard library only, as cli.py: deployment/benchmark.py loads this file by its path for the
scripts that run without the package's dependencies (benchmark_pytorch.py in a PyTorch-only
environment). The package takes these functions through `keras_efficient3d.artifacts`.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile

__all__ = ["atomic_path", "atomic_write", "atomic_write_json", "move_entries", "replacement_mode"]


def _umask():
    # Linux shows it; os.umask reads it only by setting it, for the whole process (its
    # other threads' new files) for a moment
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replacement_mode(path):
    """The mode a file written over `path` gets: that of the file it replaces, or the one
    ``open`` gives a new file under the umask (a temporary file is made 0600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def move_entries(source, destination, names=None):
    """The last step of a staged write of several files: moves `names` (in that order;
    default: every entry of folder `source`, sorted) into folder `destination`, each
    replacing the entry of that name there (a folder removed first). Returns the names."""
    names = sorted(os.listdir(source)) if names is None else list(names)
    for name in names:
        target = os.path.join(destination, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(source, name), target)
    return names


def replace_folder(staged, target):
    """The last step of a staged write of a folder: renames folder `staged` (written beside
    `target`) to `target`. A folder already there is first moved aside into a temporary
    sibling, then removed: a reader finds the old folder or the new, never a mix, and a
    rename that fails puts the old one back."""
    if os.path.isdir(target):
        aside = tempfile.mkdtemp(prefix=".replaced-", dir=os.path.dirname(os.path.abspath(target)))
        old = os.path.join(aside, "old")
        try:
            os.rename(target, old)
            try:
                os.rename(staged, target)
            except BaseException:
                os.rename(old, target)  # removed below otherwise, with nothing in its place
                raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(staged, target)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same extension, so that writers that look at it,
    such as ``model.save``, accept it); renames it over `path` when the block succeeds and
    removes it otherwise. Folders are created; the file gets the mode of the file it replaces,
    or the one ``open`` would give it under the umask."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=".tmp-", dir=directory)
    except OSError as err:  # its message names the temporary file, which the user never chose
        raise _cannot_write(path, err) from None
    os.close(fd)
    try:
        os.chmod(tmp, replacement_mode(path))  # mkstemp makes it 0600
        try:
            yield tmp
        except OSError as err:
            if not _writing(err, tmp):
                raise
            # a full disk, a quota or a file-size limit met while writing: the message
            # names the file the user asked for, not the temporary one (or none at all)
            raise _cannot_write(path, err) from None
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _cannot_write(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, data) -> str:
    """Writes `data` (bytes, or text as UTF-8) to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(data)
        else:
            with open(tmp, "wb") as handle:
                handle.write(data)
    return os.fspath(path)


def atomic_write_json(path, obj, indent=2) -> str:
    """Writes `obj` as JSON (and a final newline) to `path` atomically; returns `path`."""
    return atomic_write(path, json.dumps(obj, indent=indent, default=str) + "\n")


# What only a write meets; an error of another file read inside the block stays as it is.
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _writing(err, tmp) -> bool:
    """Whether `err`, raised inside `atomic_path`'s block, is the temporary file's write."""
    if isinstance(err.filename, (str, bytes, os.PathLike)):  # (a descriptor's is its number)
        name = os.path.abspath(os.fsdecode(err.filename))
        return name == os.path.abspath(tmp) or name.startswith(os.path.abspath(tmp) + os.sep)
    return err.errno in _WRITE_ERRORS


def _cannot_write(path, err) -> OSError:
    """One line that names `path` (the file asked for) and the reason, with `err`'s errno."""
    failed = OSError(f"cannot write {path} ({err.strerror or _one_line(err)})")
    failed.errno = err.errno  # (a strerror would make str() the "[Errno N]" form again)
    return failed


def _one_line(err) -> str:
    return " ".join((str(err).strip() or type(err).__name__).split())
