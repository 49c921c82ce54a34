"""Model artifacts in the database: a saved bundle directory as one content-addressed tar.

Why: a version that lives only as a directory on the trainer's disk needs one volume shared by
every worker, and nothing checks that the bytes a worker loads are the bytes that were
registered. Registering packs the directory into a tar whose bytes depend only on the files'
names and contents (:func:`pack_directory`), stores it once in ``model_artifacts`` under its
SHA-256 (:func:`store_artifact`), and a worker on any host fetches it by that hash, checks the
hash of what it received, and unpacks it into a local cache (:class:`ArtifactCache`).

Unpacking trusts nothing in the tar: absolute names, ``..``, links, devices and anything but
plain files and directories are refused (:func:`unpack_archive`), because the bytes come from a
table that more than one role can write to, and a model must never write outside its cache
directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import psycopg

from linewatch.errors import InfrastructureError, LinewatchError
from linewatch.storage.connection import connect

__all__ = [
    "ArtifactCache",
    "ArtifactIntegrityError",
    "UnsafeArchiveError",
    "default_cache_dir",
    "pack_directory",
    "read_artifact",
    "sha256_hex",
    "store_artifact",
    "unpack_archive",
    "verify",
]

log = logging.getLogger(__name__)

#: Written into a cache entry last, after every file is unpacked; an entry without it is never used.
MARKER = ".linewatch-verified.json"
#: Fixed header fields, so the same files give the same tar bytes on any host, at any time, as any user.
_FILE_MODE = 0o644
_DIR_MODE = 0o755


class ArtifactIntegrityError(LinewatchError):
    """The bytes fetched for a version are not the bytes registered (their SHA-256 differs)."""


class UnsafeArchiveError(LinewatchError, ValueError):
    """A tar that would write outside its directory, or holds links or devices; nothing is unpacked."""


def sha256_hex(data: bytes) -> str:
    """The content address of an artifact: the hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def pack_directory(root: Path) -> bytes:
    """The files under ``root`` as one uncompressed tar whose bytes depend only on names and contents.

    Why deterministic: the hash is the artifact's identity, so packing the same files twice (a
    retried registration, a copy of the directory with other mtimes or owner) must give the same
    bytes and therefore the same row. Names are sorted, and mtime, uid/gid, owner names and modes
    are fixed. No compression: the arrays and ONNX graphs inside are already dense, and a
    compressor's output may change between library versions. Links and special files are
    refused, since they would not survive the trip to another host.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"cannot pack {root}: not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
            name = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if stat.S_ISDIR(mode):
                info.type, info.mode = tarfile.DIRTYPE, _DIR_MODE
                tar.addfile(info)
            elif stat.S_ISREG(mode):
                data = path.read_bytes()
                info.type, info.mode, info.size = tarfile.REGTYPE, _FILE_MODE, len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                raise UnsafeArchiveError(
                    f"cannot pack {path}: only plain files and directories go into a model artifact")
    return buf.getvalue()


def _safe_name(name: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside the target, or :class:`UnsafeArchiveError`."""
    path = PurePosixPath(name)
    if not name or name.startswith(("/", "\\")) or path.is_absolute() or ":" in path.parts[0]:
        raise UnsafeArchiveError(f"refusing to unpack {name!r}: absolute path")
    if any(part == ".." for part in path.parts) or "\\" in name:
        raise UnsafeArchiveError(f"refusing to unpack {name!r}: it leaves the target directory")
    if path.name == MARKER:
        raise UnsafeArchiveError(f"refusing to unpack {name!r}: the cache's own marker name")
    return path


def unpack_archive(data: bytes, target: Path) -> dict[str, int]:
    """Unpack a tar made by :func:`pack_directory` into ``target``; returns each file's name and size.

    Every member is checked before anything is written, so a refused archive leaves nothing
    behind: only plain files and directories, with relative names that stay inside ``target``.
    Files are written with this process's umask, whatever modes the tar claims.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            checked = []
            for member in members:
                path = _safe_name(member.name)
                if not (member.isreg() or member.isdir()):
                    raise UnsafeArchiveError(
                        f"refusing to unpack {member.name!r}: links and devices are not allowed in a model artifact")
                checked.append((path, member))
            target.mkdir(parents=True, exist_ok=True)
            files: dict[str, int] = {}
            for path, member in checked:
                out = target.joinpath(*path.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # a regular member always has content
                with open(out, "xb") as dst:
                    shutil.copyfileobj(src, dst)
                files[path.as_posix()] = member.size
    except tarfile.TarError as e:
        raise UnsafeArchiveError(f"not a readable model artifact: {e}") from e
    except FileExistsError as e:
        raise UnsafeArchiveError(f"refusing to unpack: {e.filename} appears twice in the archive") from e
    return files


def store_artifact(conn: psycopg.Connection, data: bytes) -> str:
    """Store ``data`` in ``model_artifacts`` under its SHA-256 (once: an existing row is kept); returns it.

    Runs in the caller's transaction, so the row and the ``model_versions`` row that refers to it
    commit together.
    """
    digest = sha256_hex(data)
    conn.execute(
        "INSERT INTO model_artifacts (sha256, size, content) VALUES (%s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
        (digest, len(data), data),
    )
    return digest


def read_artifact(url: str, sha256: str, *, what: str) -> bytes:
    """The bytes stored under ``sha256``, as they are (:meth:`ArtifactCache.get` checks them).

    Raises :class:`ArtifactIntegrityError` when there is no such row, and
    :class:`InfrastructureError` when the database cannot be reached; either way the model cache
    logs it and keeps serving what it has. ``what`` names the version in the message.
    """
    try:
        with connect(url) as conn:
            row = conn.execute("SELECT content FROM model_artifacts WHERE sha256 = %s", (sha256,)).fetchone()
    except psycopg.Error as e:
        raise InfrastructureError(f"cannot fetch the artifact of {what} ({sha256[:12]}): {e}") from e
    if row is None or row[0] is None:
        raise ArtifactIntegrityError(f"{what}: no content in model_artifacts for sha256 {sha256}")
    return bytes(row[0])


def verify(data: bytes, sha256: str, *, what: str) -> None:
    """Raise :class:`ArtifactIntegrityError` unless ``data`` hashes to ``sha256``.

    Why at load time: the registered hash is the only thing tying a version to its bytes; a row
    changed afterwards (by hand, by a role that may write the table, by a bad restore) must stop
    the load rather than serve a model nobody trained.
    """
    actual = sha256_hex(data)
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"{what}: sha256 mismatch: registered {sha256}, the stored bytes hash to {actual}; "
            "refusing to load it (the model_artifacts row was changed or corrupted)")


def default_cache_dir() -> Path:
    """Where a cache without a configured directory keeps unpacked artifacts: the temp dir, per user.

    Per user because a directory in a shared temp dir that someone else created could hold a
    planted "verified" copy; :class:`ArtifactCache` also refuses a root it does not own.
    """
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"linewatch-model-cache-{user}"


class ArtifactCache:
    """Unpacked artifacts under ``root/<sha256>/``, each trusted only with a complete marker.

    Why a marker: a worker killed mid-unpack leaves a partial directory, which must never be
    mistaken for a model. An entry is unpacked into a private sibling directory, the marker
    (the hash and every file's size) is written last, and only then is it renamed into place;
    an entry whose marker is missing or does not match its files is removed and fetched again.
    Several workers on one host may share a root: the first complete rename wins.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        # A directory the operator chose is theirs to secure; the shared temp dir is checked.
        self._check_owner = root is None

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256

    def get(self, sha256: str, fetch: Callable[[], bytes], *, what: str) -> Path:
        """The directory holding the artifact ``sha256``, calling ``fetch`` for its bytes if not cached.

        The fetched bytes are checked against ``sha256`` before anything is unpacked
        (:func:`verify`; ``what`` names the version in the error), so the cache only ever holds
        what was registered.
        """
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ArtifactIntegrityError(f"{what}: {sha256!r} is not a sha256 hex digest")
        self._prepare_root()
        entry = self.path_for(sha256)
        if self._verified(entry, sha256):
            return entry
        if entry.exists():
            log.warning("model cache entry %s is incomplete or changed; fetching it again", entry)
            shutil.rmtree(entry, ignore_errors=True)
        data = fetch()
        verify(data, sha256, what=what)
        partial = self.root / f".partial-{sha256[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            files = unpack_archive(data, partial)
            (partial / MARKER).write_text(json.dumps({"sha256": sha256, "files": files}, sort_keys=True))
            try:
                partial.rename(entry)
            except OSError:
                if not self._verified(entry, sha256):  # not another worker's complete copy: a real failure
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return entry

    def _prepare_root(self) -> None:
        """Create the root (owner-only); in the temp dir, refuse one another user owns or can write to."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._check_owner and hasattr(os, "getuid"):
            st = self.root.stat()
            if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise InfrastructureError(
                    f"model cache directory {self.root} is owned or writable by another user; "
                    "give the cache a directory of its own")

    @staticmethod
    def _verified(entry: Path, sha256: str) -> bool:
        """True when ``entry`` holds a complete unpack of ``sha256``: its marker matches and every file is there."""
        try:
            marker = json.loads((entry / MARKER).read_text())
            if marker.get("sha256") != sha256:
                return False
            return all(entry.joinpath(*PurePosixPath(name).parts).stat().st_size == size
                       for name, size in marker["files"].items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
