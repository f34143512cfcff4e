"""Writing where the user said (`--out`): never over what they have, and a failure
that names the option instead of an "unexpected OSError"."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from farm.errors import InvalidInput


@contextmanager
def writing(option: str, path: Path | str) -> Iterator[None]:
    """Turn an OSError while writing to `path` (a full disk, /dev/full, a folder in
    the way, no permission) into a refusal naming `option`."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise InvalidInput(f"{option} {path}: cannot write there{where}: "
                           f"{exc.strerror or exc}") from None


def write_text(path: Path | str, text: str, option: str = "--out") -> None:
    """Write `text` to the file `path`, refusing clearly when it cannot."""
    with writing(option, path):
        Path(path).write_text(text)


def check_report_dir(out: Path, force: bool, option: str = "--out") -> None:
    """A report folder is written only where no report is, unless `force`: an
    existing index.html (or figures/) may be the user's own work."""
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{option} {out}: exists and is not a folder")
    figures = out / "figures"
    taken = [p for p in (out / "index.html",) if p.exists()]
    if figures.is_dir() and any(figures.iterdir()):
        taken.append(figures)
    if taken and not force:
        raise InvalidInput(f"{option} {out}: {' and '.join(str(p) for p in taken)} already "
                           "there: --force overwrites them (the report's own files only), or "
                           "pick another folder")

