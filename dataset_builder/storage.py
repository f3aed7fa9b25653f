"""Where the builder's files live: fsspec URLs for inputs (read through a local cache) and the corpus folder.

Every path the builder reads or writes may be a local path or an fsspec URL (``hf://datasets/...``, ``s3://...``,
``gs://...``, ``memory://...``, ``file://...``); credentials are fsspec's business (environment, config files),
never ours. ``s3://`` needs ``s3fs`` and ``gs://`` ``gcsfs`` installed; fsspec names the package when it is missing.

* Inputs: ``fetch`` gives a local file for any URL. Remote files are copied once into a cache folder
  (``--cache_dir``, default ``$CHEXANATOMY_CACHE`` or ``~/.cache/chexanatomy/inputs``) by fsspec, under a name made
  from the URL, so a re-run reads nothing twice. The copy is written to a temporary name and renamed: a worker
  killed mid-download leaves no partial file that a later run would take for the whole (fsspec's ``simplecache``
  writes in place, which is why it is not used).
* Outputs: ``Folder`` is a corpus folder on any filesystem. ``Folder.write`` is atomic where the filesystem
  allows it: a local file is written to ``.{name}.tmp-{pid}`` and renamed; an object store (S3, GCS, the Hub,
  memory) makes an object visible only once it is whole, so one ``pipe`` is atomic there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from chexanatomy.cli import one_line

DEFAULT_CACHE = Path(os.environ.get("CHEXANATOMY_CACHE", Path.home() / ".cache" / "chexanatomy")) / "inputs"


class StorageError(OSError):
    """A remote location that cannot be used: its fsspec filesystem package is missing, or it cannot be reached."""


def filesystem(url: str | Path):
    """``(fsspec filesystem, path)`` of ``url``; ``StorageError`` naming the package to install when it is missing."""
    try:
        return fsspec.core.url_to_fs(str(url))
    except ImportError as err:  # s3fs, gcsfs, paramiko, ...: fsspec's message names the package
        raise StorageError(f"cannot use {url}: {err} (pip install it)") from None


@contextlib.contextmanager
def reaching(url: str | Path):
    """Run remote filesystem calls on ``url``: an error that is no ``OSError`` becomes ``StorageError`` naming it.

    Filesystems raise their client's own errors when a server cannot be reached (``httpx.ConnectError`` for
    ``hf://``, botocore's for ``s3://``); as ``OSError`` they are a failed subject or a usage error, not a traceback.
    """
    try:
        yield
    except OSError:
        raise
    except Exception as err:
        raise StorageError(f"could not reach {url} ({type(err).__name__}: {one_line(err)})") from err


def _remote(method):
    """A ``Folder`` method whose remote calls go through ``reaching(self.url)``."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with contextlib.nullcontext() if self.local else reaching(self.url):
            return method(self, *args, **kwargs)

    return wrapper


def is_local(url: str | Path) -> bool:
    """True for a local path or a ``file://`` URL (read in place, never cached)."""
    return isinstance(filesystem(url)[0], LocalFileSystem)


def local_path(url: str | Path) -> Path:
    """The local path of a local path or ``file://`` URL (``ValueError`` for a remote URL); relative stays relative."""
    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        raise ValueError(f"{url} is not a local path")
    return Path(path) if "://" in str(url) else Path(url)


def join(url: str | Path, *parts: str) -> str:
    """``url`` with ``parts`` appended by ``/`` (keeps the protocol; ``..`` and ``.`` are resolved for local paths)."""
    if is_local(url):
        return str(local_path(url).joinpath(*parts))
    return "/".join([str(url).rstrip("/"), *(p.strip("/") for p in parts)])


def exists(url: str | Path) -> bool:
    """Whether a file or folder exists at ``url`` (``StorageError`` when it cannot be reached)."""
    fs, path = filesystem(url)
    with reaching(url):
        return fs.exists(path)


def isdir(url: str | Path) -> bool:
    """Whether ``url`` is a folder (``StorageError`` when it cannot be reached)."""
    fs, path = filesystem(url)
    with reaching(url):
        return fs.isdir(path)


def listdir(url: str | Path) -> list[tuple[str, str]]:
    """``(name, kind)`` of the entries of folder ``url``, sorted by name; kind is ``directory``, ``file`` or, for a
    local symbolic link that leads to nothing (dangling, or a loop), ``broken link``.
    """  # noqa: D205
    if is_local(url):
        entries = sorted(local_path(url).iterdir())
        kinds = ["directory" if p.is_dir() else "broken link" if p.is_symlink() and not p.exists() else "file"
                 for p in entries]  # fmt: skip
        return [(p.name, kind) for p, kind in zip(entries, kinds, strict=True)]
    fs, path = filesystem(url)
    with reaching(url):
        entries = fs.ls(path, detail=True)
    return sorted((e["name"].rstrip("/").rsplit("/", 1)[-1], "directory" if e["type"] == "directory" else "file")
                  for e in entries)  # fmt: skip


def fetch(url: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local file with the content of ``url``: the path itself when local, else a cached copy (see module doc).

    A remote folder (a DICOM series, a TotalSegmentator subject) is fetched whole, with its sub-folders.

    Raises:
        FileNotFoundError: nothing at ``url`` (the server answered so).
        StorageError: ``url``'s filesystem package is missing, or its server could not be reached.
    """
    if is_local(url):
        return local_path(url)
    fs, path = filesystem(url)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    target = Path(cache_dir or DEFAULT_CACHE) / hashlib.sha256(str(url).encode()).hexdigest()[:24] / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    try:
        with reaching(url):
            info = _info(fs, path, url)  # not exists(): that answers False for a server it cannot reach
            if info["type"] == "directory":
                _download_tree(fs, path, tmp)
            else:
                fs.get_file(path, str(tmp))
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return target


def _info(fs, path: str, url: str | Path) -> dict:
    """``fs.info(path)``: ``FileNotFoundError`` when the server says there is nothing, ``StorageError`` when the
    server cannot be reached (any other error).
    """  # noqa: D205
    try:
        return fs.info(path)
    except FileNotFoundError as err:
        cause = err.__cause__  # fsspec's HTTP filesystem reports a server it cannot reach as FileNotFoundError
        if cause is None or getattr(cause, "status", None) in (404, 410):
            raise FileNotFoundError(f"{url} does not exist") from None
        raise StorageError(f"could not reach {url} ({type(cause).__name__}: {one_line(cause)})") from err
    except Exception as err:  # noqa: BLE001 - aiohttp, httpx, botocore... each raise their own
        raise StorageError(f"could not reach {url} ({type(err).__name__}: {one_line(err)})") from err


def _download_tree(fs, path: str, target: Path) -> None:
    """Copy the folder ``path`` of ``fs`` with its sub-folders to the local ``target``."""
    target.mkdir(parents=True)
    for entry in fs.ls(path, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] == "directory":
            _download_tree(fs, entry["name"], target / name)
        else:
            fs.get_file(entry["name"], str(target / name))


def read_text(url: str | Path, cache_dir: str | Path | None = None, encoding: str = "utf-8") -> str:
    """The text of the file at ``url`` (through the cache when remote)."""
    return fetch(url, cache_dir).read_text(encoding=encoding)


def temporary_path(path: Path) -> Path:
    """Where a local ``path`` is written before ``os.replace`` puts it in place: ``.{name}.tmp-{pid}`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def target_of_temporary(name: str) -> str | None:
    """The file name a temporary file name (see ``temporary_path``) stands for, None for any other name."""
    match = re.fullmatch(r"\.(.+)\.tmp-[0-9]+", name)
    return match.group(1) if match else None


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` to the local ``path`` so that readers see the old file or the whole new one, never a part.

    Raises:
        OSError: naming ``path`` (a full disk, a read-only folder), with the original ``errno``.
    """
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as err:  # a full disk's error names no file: say which one was being written
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    finally:
        tmp.unlink(missing_ok=True)


class Folder:
    """A corpus folder at a local path or fsspec URL; every path argument is relative to it (``data/x.parquet``).

    Attributes:
        url: the folder as given.
        local: its local ``Path`` when it is on the local filesystem, else None.
    """

    def __init__(self, url: str | Path):
        self.url = str(url)
        self.fs, self._path = filesystem(self.url)
        self.local = local_path(url) if isinstance(self.fs, LocalFileSystem) else None

    def __repr__(self) -> str:
        return self.url

    @classmethod
    def of(cls, folder: Folder | str | Path) -> Folder:
        """``folder`` itself if it is a ``Folder``, else the ``Folder`` at that path or URL."""
        return folder if isinstance(folder, Folder) else cls(folder)

    def full(self, rel: str) -> str:
        """The filesystem path (without protocol) of ``rel``."""
        return f"{self._path.rstrip('/')}/{rel}"

    def url_of(self, rel: str) -> str:
        """``rel`` as a local path or URL a user can open."""
        return str(self.local / rel) if self.local else join(self.url, rel)

    @_remote
    def makedirs(self) -> None:
        """Create the folder (and ``data/``) if needed."""
        self.fs.makedirs(self.full("data"), exist_ok=True)

    @_remote
    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists."""
        return self.fs.exists(self.full(rel))

    @_remote
    def read_bytes(self, rel: str) -> bytes:
        """The content of ``rel`` (``FileNotFoundError`` when missing)."""
        return self.fs.cat_file(self.full(rel))

    def read_text(self, rel: str) -> str:
        """The UTF-8 text of ``rel`` (``FileNotFoundError`` when missing)."""
        return self.read_bytes(rel).decode()

    @_remote
    def write(self, rel: str, data: bytes | str) -> None:
        """Write ``rel`` atomically (see the module docstring)."""
        if self.local:
            write_atomically(self.local / rel, data)
        else:
            self.fs.pipe_file(self.full(rel), data.encode() if isinstance(data, str) else data)

    @_remote
    def names(self, sub: str = "") -> list[str]:
        """Sorted names of the files directly in ``sub`` (``""``: the folder itself); none when it does not exist."""
        if self.local:
            folder = self.local / sub
            return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        if not self.fs.isdir(self.full(sub).rstrip("/")):
            return []
        infos = self.fs.ls(self.full(sub).rstrip("/"), detail=True)
        return sorted(i["name"].rstrip("/").rsplit("/", 1)[-1] for i in infos if i["type"] == "file")

    def remove_temporaries(self, sub: str, names: set[str]) -> None:
        """Delete local temporaries (``.NAME.tmp-PID``, left by killed writers) of the files ``names`` in ``sub``."""
        if self.local and (self.local / sub).is_dir():
            for path in (self.local / sub).iterdir():
                if target_of_temporary(path.name) in names:
                    path.unlink(missing_ok=True)
