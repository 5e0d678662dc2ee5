"""The downloadable adapter: one .tar.gz of the PEFT folder, built once when the job succeeds.

Built deterministically (sorted names, zeroed times and owners), so the same adapter always has the same
sha256, and written under a temporary name then renamed, so a reader never streams half an archive.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tarfile
from pathlib import Path

ARCHIVE_NAME = "adapter.tar.gz"


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def package_adapter(adapter_dir: str | Path, archive_path: str | Path) -> tuple[int, str]:
    """Write `archive_path` (members under "adapter/"); returns (bytes, sha256 hex)."""
    return package_folder(adapter_dir, archive_path, "adapter")


def package_folder(folder: str | Path, archive_path: str | Path, top: str, compress: bool = True) -> tuple[int, str]:
    """Write `archive_path` with the files of `folder` under `top/`; returns (bytes, sha256 hex).
    `compress=False`: a plain tar, for contents gzip cannot shrink (a GGUF file) but would spend seconds on.
    A failed write (a full disk) leaves nothing: the temporary archive is removed."""
    adapter_dir, archive_path = Path(folder), Path(archive_path)
    temp = archive_path.with_name(archive_path.name + f".tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as raw, _maybe_gzip(raw, compress) as stream:
            with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(adapter_dir, arcname=top, recursive=False, filter=_normalise)
                for path in sorted(adapter_dir.rglob("*")):
                    arcname = str(Path(top) / path.relative_to(adapter_dir))
                    tar.add(path, arcname=arcname, recursive=False, filter=_normalise)
        os.replace(temp, archive_path)
    finally:
        temp.unlink(missing_ok=True)
    digest = hashlib.sha256()
    with open(archive_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return archive_path.stat().st_size, digest.hexdigest()


def _maybe_gzip(raw, compress: bool):
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else contextlib.nullcontext(raw)
