"""Hashing and atomic, non-clobbering writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

from thermocal.errors import InputError, OutputError

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_listing(entries: Iterable[tuple[Path, str]]) -> str:
    """One identity for several files: sha256 of the lines `<file sha256>  <label>`, in order."""
    lines = "".join(f"{sha256_file(file)}  {label}\n" for file, label in entries)
    return hashlib.sha256(lines.encode()).hexdigest()


def memory_budget() -> int:
    """Bytes a loaded sample may take: a quarter of the memory available now (the probe holds a
    few copies of it: shuffled, cast, on the device), from /proc/meminfo where there is one,
    else a quarter of the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 4
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (OSError, ValueError, AttributeError):
        return 1 << 32


def read_text(path: Path) -> str:
    """A UTF-8 text file's content, or an InputError naming the file."""
    if not path.exists():
        raise InputError("no such file", path)
    if not path.is_file():
        raise InputError("is not a file", path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read ({exc})", path) from exc


def ensure_writable(path: Path, *, force: bool) -> None:
    """Fail early, before any long work, if writing `path` would replace a file or cannot work."""
    if path.is_dir():
        raise OutputError("is a directory; give a file path", path)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"is a symlink to {os.readlink(path)}, which does not exist; remove the link or "
                          "choose another --out", path)
    if path.exists() and not force:
        raise OutputError("already exists; pass --force to replace it", path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"its folder {parent} does not exist", path)
    if not os.access(parent, os.W_OK):
        raise OutputError(f"its folder {parent} is not writable", path)


def write_text_atomic(path: Path, text: str | Iterable[str], *, force: bool) -> None:
    """`write_atomic` of the UTF-8 encoded text (one string, or pieces written in turn)."""
    pieces = [text] if isinstance(text, str) else text
    write_atomic(path, (piece.encode("utf-8") for piece in pieces), force=force)


def write_bytes_atomic(path: Path, data: bytes, *, force: bool) -> None:
    write_atomic(path, [data], force=force)


def write_atomic(path: Path, chunks: Iterable[bytes], *, force: bool) -> None:
    """Write the chunks to `path` so that readers see the old file or the whole new one, never a part.

    They go to a temporary file in the same folder, which is flushed to disk and then renamed
    over `path`; on any failure (a full disk, an interrupt) the temporary file is removed. An
    existing file is only replaced when `force` is true.
    """
    ensure_writable(path, force=force)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot be written ({exc.strerror})", path) from exc
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(tmp, path)
        else:
            # link() fails if `path` appeared meanwhile: never clobber a file we did not check.
            os.link(tmp, path)
            os.unlink(tmp)
    except FileExistsError as exc:
        os.unlink(tmp)
        raise OutputError("already exists; pass --force to replace it", path) from exc
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"cannot be written ({exc.strerror})", path) from exc
    except BaseException:  # an interrupt, or an error from whatever produced the chunks
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
