"""Atomic file writes (every file recsim-ft saves appears complete or not at all) and the cache
folder of what recsim-ft builds once per machine."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, rename it onto
    ``path`` (atomic on POSIX), so a kill mid-write never leaves a half-written file under
    ``path``; the temporary file is removed whatever happens.

    The file gets the mode of any newly created file (``0o666`` less the umask, e.g. ``0o644``),
    whatever the writer inside the block used: safetensors, for one, writes ``0o600``.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('done', ['a.txt'])
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: give the path of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)  # left by a killed process with the same id
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = stat.S_IMODE(tmp.stat().st_mode)  # what the umask makes of 0o666
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; when the block ends without error, it
    becomes ``path``, replacing a folder already there only with ``replace`` (the old one is
    deleted after the swap). So ``path`` holds all of what one block wrote, or what it held
    before: never a mix, never half of it. The temporary folder is removed whatever happens.

    >>> target = Path(tempfile.mkdtemp()) / "export"
    >>> with atomic_directory(target) as tmp:
    ...     _ = (tmp / "a.txt").write_text("first")
    >>> with atomic_directory(target, replace=True) as tmp:
    ...     _ = (tmp / "b.txt").write_text("second")
    >>> sorted(p.name for p in target.iterdir()), sorted(p.name for p in target.parent.iterdir())
    (['b.txt'], ['export'])
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file: give the path of a folder to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # what a new folder gets, not mkdtemp's 0o700
        yield tmp
        old = None
        if path.exists():
            if any(path.iterdir()) and not replace:
                raise FileExistsError(f"{path} is not empty; pass replace=True to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/recsim_ft`` (default ``~/.cache/recsim_ft``): compiled kernels and
    generated data, each rebuilt when missing."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "recsim_ft"
