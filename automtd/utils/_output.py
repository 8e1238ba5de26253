"""Output paths of commands: refuse to overwrite without ``--force``; write to a sibling, then swap it in.

Every command that writes a file or a directory (``apply``, ``plan``, ``export``, ``torchscript``,
``front --plot``) goes through :func:`atomic_output`, so an existing target is never replaced unless asked,
and a failure (an exception, Ctrl-C, a full disk) never leaves a half-written target behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from automtd._errors import AutomtdError, ConfigError

__all__ = ["atomic_output", "check_output"]


def check_output(path: str | os.PathLike[str], *, force: bool = False, flag: str = "--force") -> Path:
    """Refuse ``path`` if it is a file or a non-empty directory (unless ``force``); returns it as a Path.

    An empty directory is not worth protecting and may be written into.
    """
    target = Path(path)
    if force or not os.path.lexists(target):
        return target
    if target.is_dir() and not target.is_symlink():
        if not any(target.iterdir()):
            return target
        raise ConfigError(
            f"output directory {str(target)!r} already exists and is not empty; pass {flag} to replace it"
        )
    raise ConfigError(f"output {str(target)!r} already exists; pass {flag} to replace it")


def _unwritable(target: Path, exc: OSError) -> AutomtdError:
    reason = exc.strerror or type(exc).__name__
    existing = next((p for p in target.parents if os.path.lexists(p)), None)
    if existing is not None and not existing.is_dir():
        reason = f"{str(existing)!r} is a file, not a folder"
    return AutomtdError(f"cannot write output {str(target)!r}: {reason}; choose a writable location for it")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap_in(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target``: ``os.replace`` for a file; for a directory the old one is moved aside first."""
    if tmp.is_dir() and os.path.lexists(target):
        if target.is_dir() and not target.is_symlink():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old / target.name, target)  # put the old one back
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
            return
        target.unlink()
    elif not tmp.is_dir() and target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(tmp, target)


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, force: bool = False, directory: bool = False, flag: str = "--force"
) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into; on success it replaces ``path`` in one rename.

    ``directory``: the sibling is an (empty) directory, else a file name with the target's suffix (so
    writers choosing the format by suffix still do).  An existing target is refused unless ``force``
    (:func:`check_output`); an unwritable location is one :class:`AutomtdError` line naming the path and
    the reason.  On any exception, Ctrl-C included, the sibling is removed and the target left as it was.
    Error messages of the writer naming the sibling are rewritten to name ``path``.
    """
    target = check_output(path, force=force, flag=flag)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # created here (with the umask's permissions, unlike tempfile's 0600) so an unwritable place fails now
        tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}{'' if directory else target.suffix}"
        if directory:
            tmp.mkdir()
        else:
            tmp.open("x").close()
    except OSError as exc:
        raise _unwritable(target, exc) from None
    try:
        yield tmp
        check_output(target, force=force, flag=flag)  # something else may have created it meanwhile
        _swap_in(tmp, target)
    except AutomtdError as exc:
        if str(tmp) in str(exc):
            raise type(exc)(str(exc).replace(str(tmp), str(target))) from None
        raise
    except OSError as exc:
        names = {str(v) for v in (exc.filename, exc.filename2) if v is not None}
        if names and not any(n.startswith(str(tmp)) or n == str(target) for n in names):
            raise
        raise _unwritable(target, exc) from None
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
