"""Declared outputs appear only complete: write to a temporary name beside the target, then
rename it."""

import contextlib
import json
import os
import tempfile
from pathlib import Path

from tadsweep.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's folder; rename it onto `path` only on success. A
    folder that cannot be made or written to is one InputError line naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        file = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        why = f"{file} is a file, not a folder" if file else exc.strerror or exc
        raise InputError(f"{path}: cannot write here: {why}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600 files; results are shared, so honour the umask like open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data`, synced to disk; readers never see a partial file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        raw.write(data)
        raw.flush()
        os.fsync(raw.fileno())


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
