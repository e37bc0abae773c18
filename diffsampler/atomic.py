"""Atomic output: a file or folder appears complete or not at all, and only files we wrote are ever replaced.

Temporaries are hidden siblings named ``.<name>.tmp-<pid>-<random>`` (``.<name>.old-<pid>`` while a folder is
swapped), so a later run can tell its own leftovers of a killed process from anything a user keeps there.
A folder the toolbox writes holds a marker file (``MARKER``) naming the command and listing the files it wrote; a
folder without one is never written into. A rerun into its own folder replaces exactly the files the marker
lists (and writes its new ones), and leaves every other file and folder there as it is.
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
from typing import Callable, Iterator

from diffsampler.errors import UserError, shorten

MARKER = ".diffsampler"
"""The file (JSON {"made_by": "diffsampler", "command": ..., "files": [...]}) that marks a folder as output of ours
and lists, relative to the folder, the files we wrote there."""
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp-(?P<pid>\d+)-[^/]*|old-(?P<old>\d+))$")
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
NAME_MAX = 255
"""The longest file name (bytes) of the common file systems (ext4, XFS, btrfs, tmpfs, APFS, NTFS)."""
TEMP_SUFFIX_BYTES = 55
"""What our temporaries add to a name: '.' + name + '.partial' (compute-ems) + '.tmp-<pid, up to 10>-<random, 8 or
more>' + a suffix such as '.npz', with room to spare."""
MAX_NAME_BYTES = NAME_MAX - TEMP_SUFFIX_BYTES
"""The longest output name (bytes, UTF-8) a command accepts: the rest of NAME_MAX is for our temporaries."""


def check_name(name: str, option: str = "--name") -> str:
    """``name`` when it is a single path component (no '/', not '.' or '..') of at most MAX_NAME_BYTES bytes, else
    a one-line error."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UserError(
            f"{option} must be a single folder or file name (no '/', '.' or '..'), "
            f"got {shorten(name)}; set the parent with --out"
        )
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        raise UserError(
            f"{option} {shorten(name, 40)} is {size} bytes long; the limit is {MAX_NAME_BYTES} bytes "
            f"(the file system's {NAME_MAX} less room for temporary names): choose a shorter name"
        )
    return name


def check_path_names(path: Path, option: str = "--out") -> None:
    """Refuse (one line) an output path whose last component is longer than ``check_name`` allows, or one of whose
    folders is longer than NAME_MAX bytes."""
    check_name(path.name, option)
    for part in path.parent.parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise UserError(f"{option}: the folder name {shorten(part, 40)} is longer than {NAME_MAX} bytes")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, folder: bool) -> None:
    """Give a temporary (created 0700 / 0600 by tempfile) the mode any other tool would create it with."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _disk_error(exc: OSError, what: Path) -> UserError | None:
    """One line for a full disk, quota, read-only file system or too long a name while writing ``what`` (None for
    other errors)."""
    if exc.errno == errno.ENAMETOOLONG:
        return UserError(f"cannot write {shorten(str(what), as_repr=False)}: file name too long; choose a shorter name")
    if exc.errno not in _FULL_DISK:
        return None
    reason = exc.strerror or os.strerror(exc.errno)
    return UserError(f"cannot write {what}: {reason}; free some space or choose another --out")


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) or fail with one line saying it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {shorten(str(path), as_repr=False)}: {exc.strerror}") from exc
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


def check_own_file(path: Path, ours: Callable[[Path], bool], what: str) -> None:
    """Refuse (one line) an output file ``path`` that exists and is not ``what`` of ours (``ours(path)`` False): a
    command replaces only a file it wrote."""
    if path.is_symlink() or (path.exists() and not path.is_file()) or (path.is_file() and not ours(path)):
        raise UserError(
            f"{path} exists and is not {what} written by diffsampler, so it is left alone; "
            "move it away or choose another output name"
        )


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


def _marker(folder: Path) -> dict[str, object] | None:
    """The marker of ``folder`` (a folder we wrote), or None."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("made_by") == "diffsampler" else None


def made_by(folder: Path) -> str | None:
    """The command named by the marker of ``folder`` (a folder we wrote), or None."""
    marker = _marker(folder)
    command = None if marker is None else marker.get("command")
    return command if isinstance(command, str) else None


def own_files(folder: Path) -> set[str] | None:
    """The files (paths relative to ``folder``) its marker lists as written by us; None where the marker predates
    the list (such a folder's files at the names a rerun writes count as ours)."""
    marker = _marker(folder)
    files = None if marker is None else marker.get("files")
    if not isinstance(files, list):
        return None
    return {f for f in files if isinstance(f, str) and _relative(f)}


def _relative(name: str) -> bool:
    """True for a relative path inside the folder (no '..', not absolute): a marker never names anything outside."""
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts and name not in ("", ".", MARKER)


def write_marker(folder: Path, command: str, files: set[str] | list[str]) -> None:
    """Mark ``folder`` as written by ``diffsampler <command>``, listing ``files`` (relative paths) as ours."""
    marker = {"made_by": "diffsampler", "command": command, "files": sorted(set(files))}
    atomic_write_bytes(folder / MARKER, (json.dumps(marker, indent=1) + "\n").encode())


def check_replaceable(final: Path, command: str) -> None:
    """Refuse (one line) when ``final`` exists and is not a folder that ``diffsampler <command>`` wrote."""
    if not final.exists() and not final.is_symlink():
        return
    owner = made_by(final)
    if owner == command:
        return
    what = f"holds the output of diffsampler {owner}" if owner else "was not written by diffsampler " + command
    raise UserError(f"{final} exists and {what}, so it is left alone; move it away or choose another --name or --out")


def _written(folder: Path) -> list[str]:
    """The files under ``folder`` (relative paths, the marker left out)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir() and p.name != MARKER)


def _users_in_the_way(final: Path, new: list[str], owned: set[str] | None) -> list[str]:
    """The paths under ``final`` that are not ours and stand where a file of ``new`` is to go."""
    blocked = []
    for name in new:
        target = final / name
        parents = [p for p in target.parents if p != final and final in p.parents]
        if any(p.is_symlink() or (p.exists() and not p.is_dir()) for p in parents):
            blocked.append(name)
        elif target.is_symlink() or target.is_dir():
            blocked.append(name)
        elif target.exists() and owned is not None and name not in owned:
            blocked.append(name)
    return blocked


def replace_own_files(tmp: Path, final: Path, command: str) -> None:
    """Move the files of the temporary folder ``tmp`` into our folder ``final``, replacing those its marker lists
    and removing the listed ones the new output lacks; any other file or folder in ``final`` is left as it is.

    While files move, the marker lists the old and the new files, so a run killed half-way leaves only files that
    are listed as ours (the next run replaces them)."""
    owned, new = own_files(final), _written(tmp)
    blocked = _users_in_the_way(final, new, owned)
    if blocked:
        raise UserError(
            f"{final} holds {', '.join(blocked[:3])}{' ...' if len(blocked) > 3 else ''} of yours where "
            f"diffsampler {command} writes its own; move them away or choose another --name or --out"
        )
    old = owned if owned is not None else set()
    write_marker(final, command, old | set(new))
    for name in new:
        (final / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / name, final / name)
    for name in sorted(old - set(new)):
        remove_own_file(final, name)
    write_marker(final, command, new)
    shutil.rmtree(tmp, ignore_errors=True)


def remove_own_file(folder: Path, name: str) -> None:
    """Delete our file ``folder/name`` and then each parent folder it leaves empty (up to ``folder``)."""
    path = folder / name
    if path.is_file() or path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for parent in path.parents:
        if parent == folder or folder not in parent.parents:
            break
        try:
            parent.rmdir()  # only an empty folder: one holding a user's file stays
        except OSError:
            break


@contextlib.contextmanager
def atomic_dir(final: str | Path, command: str) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success its files become the output ``final``, on error it is removed.

    A new ``final`` appears whole (the temporary is renamed). An existing one may only be written when it is a
    folder of the same ``command`` (``check_replaceable``): then exactly the files its marker lists are replaced
    (``replace_own_files``) and nothing else there is touched. Stale temporaries of ``final`` left by a killed run
    are removed first.
    """
    final = Path(final)
    check_replaceable(final, command)
    ensure_writable_dir(final.parent)
    remove_stale_temporaries(final.parent, final.name)
    tmp = _temp_dir(final)
    try:
        _apply_umask(tmp, folder=True)
        yield tmp
        check_replaceable(final, command)
        if final.exists():
            replace_own_files(tmp, final, command)
        else:
            write_marker(tmp, command, _written(tmp))
            tmp.rename(final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        disk = _disk_error(exc, final) if isinstance(exc, OSError) else None
        if disk is not None:
            raise disk from exc
        raise


def _temp_dir(final: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    except OSError as exc:
        disk = _disk_error(exc, final)
        if disk is not None:
            raise disk from exc
        raise


def save_npz(path: Path, **arrays: object) -> None:
    """``np.savez`` to ``path``, the archive built in memory first, so that a full disk fails in one write (and no
    half-closed zip writer is left to complain at exit)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


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
