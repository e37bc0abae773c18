"""Atomic output: a file or folder appears complete or not at all, and only our own folders are ever replaced.

Temporaries are hidden siblings named ``.<name>.tmp-<pid>-<random>`` (``.<name>.old-<pid>`` while a folder is
swapped), so a later run can tell its own leftovers of a killed process from anything a user keeps there.
A folder the toolbox writes holds a marker file (``MARKER``) naming the command; a folder without one is never
replaced or deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from diffsampler.errors import UserError

MARKER = ".diffsampler"
"""The file (JSON {"made_by": "diffsampler", "command": ...}) that marks a folder as replaceable output of ours."""
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp-(?P<pid>\d+)-[^/]*|old-(?P<old>\d+))$")
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def check_name(name: str, option: str = "--name") -> str:
    """``name`` when it is a single path component (no '/', not '.' or '..'), else a one-line error."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UserError(
            f"{option} must be a single folder or file name (no '/', '.' or '..'), "
            f"got '{name}'; set the parent with --out"
        )
    return name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, folder: bool) -> None:
    """Give a temporary (created 0700 / 0600 by tempfile) the mode any other tool would create it with."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _disk_error(exc: OSError, what: Path) -> UserError | None:
    """One line for a full disk, quota or read-only file system while writing ``what`` (None for other errors)."""
    if exc.errno not in _FULL_DISK:
        return None
    reason = exc.strerror or os.strerror(exc.errno)
    return UserError(f"cannot write {what}: {reason}; free some space or choose another --out")


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) or fail with one line saying it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK):
        raise UserError(f"output folder {path} is not writable")


def check_writable_file(path: Path) -> None:
    """Refuse (one line, creating nothing) an output file that could not be written: checked before long work."""
    if path.is_dir():
        raise UserError(f"output file {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create output folder {path.parent}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path.parent, os.W_OK)):
        raise UserError(f"output folder {parent} is not writable; choose another output path")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def is_stale_temporary(path: Path, name: str | None = None) -> bool:
    """True for a temporary of ours (of ``name``, if given) whose process is gone."""
    match = _TEMP.match(path.name)
    if match is None or (name is not None and match["name"] != name):
        return False
    return not _alive(int(match["pid"] or match["old"]))


def remove_stale_temporaries(folder: Path, name: str | None = None, recursive: bool = False) -> None:
    """Delete our temporaries (of ``name``) left in ``folder`` by a killed process; nothing else is touched."""
    if not folder.is_dir():
        return
    for path in folder.rglob(".*") if recursive else folder.glob(".*"):
        if is_stale_temporary(path, name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def made_by(folder: Path) -> str | None:
    """The command named by the marker of ``folder`` (a folder we wrote), or None."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker.get("command") if isinstance(marker, dict) and marker.get("made_by") == "diffsampler" else None


def check_replaceable(final: Path, command: str) -> None:
    """Refuse (one line) when ``final`` exists and is not a folder that ``diffsampler <command>`` wrote."""
    if not final.exists() and not final.is_symlink():
        return
    owner = made_by(final)
    if owner == command:
        return
    what = f"holds the output of diffsampler {owner}" if owner else "was not written by diffsampler " + command
    raise UserError(f"{final} exists and {what}, so it is left alone; move it away or choose another --name or --out")


@contextlib.contextmanager
def atomic_dir(final: str | Path, command: str) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final``, on error it is removed.

    ``final`` may only be replaced when it is a folder written by the same ``command`` (``check_replaceable``);
    stale temporaries of ``final`` left by a killed run are removed first.
    """
    final = Path(final)
    check_replaceable(final, command)
    ensure_writable_dir(final.parent)
    remove_stale_temporaries(final.parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        _apply_umask(tmp, folder=True)
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"made_by": "diffsampler", "command": command}) + "\n")
        check_replaceable(final, command)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        disk = _disk_error(exc, final) if isinstance(exc, OSError) else None
        if disk is not None:
            raise disk from exc
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def _temp_file(path: Path, suffix: str = "") -> tuple[int, str]:
    """A new hidden temporary file beside ``path``, with the umask's mode (stale ones of ``path`` removed first)."""
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        disk = _disk_error(exc, path) if isinstance(exc, OSError) else None
        if disk is not None:
            raise disk from exc
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path with the same suffix beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = _temp_file(path, path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        disk = _disk_error(exc, path) if isinstance(exc, OSError) else None
        if disk is not None:
            raise disk from exc
        raise
