"""Hashing, atomic non-clobbering writes, and reading files that may come from someone else."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable

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


def require_file_or_folder(path: Path, error: type[InputError] = InputError) -> None:
    """Refuse, before anything reads it, a path that is neither a regular file nor a folder: a fifo
    would block the read forever and a device (/dev/zero) never ends."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error("no such file or directory", path) from None
    except OSError as exc:
        raise error(f"cannot be read ({exc.strerror})", path) from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a fifo" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise error(f"is {kind}; give a regular file or a folder", path)


def load_yaml(text: str) -> Any:
    """YAML as plain data, refusing aliases (`*name`): each one repeats a whole subtree, so a few KB
    of them expand to gigabytes that no limit on the file's size would see. thermocal never writes
    them (file.dumps turns them off), and no settings or schedule file needs them."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"line {mark.line + 1}: YAML aliases (*name) are not accepted in a thermocal file")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader subclass


def read_text(path: Path) -> str:
    """A UTF-8 text file's content, or an InputError naming the file."""
    if not path.exists():
        raise InputError("no such file", path)
    require_file_or_folder(path)
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
