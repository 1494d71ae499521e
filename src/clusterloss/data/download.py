"""Verified downloads: stream to a temporary file, check the MD5, extract atomically into place.

Large archives (CUB-200-2011, 1.1 GB) download resumably: an interrupted transfer continues where it
stopped (HTTP Range) on the next call. Nothing half-done is ever left where a loader would trust it: the
archive only gets its final name after its MD5 matched, and the extracted folder only appears (by one
rename) after the whole archive was extracted and contains every required file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from http.client import HTTPException
from pathlib import Path

__all__ = ["DownloadError", "md5_of_file", "download_file", "download_and_extract"]

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download or its verification failed; the message says what to fetch and where to put it."""


def md5_of_file(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manual_hint(url: str, target: Path, md5: str, folder: str | None) -> str:
    extracted = f", or extract it so that {target.parent / folder}/ exists" if folder else ""
    return f"Download {url} yourself and place it at {target} (MD5 {md5}){extracted}."


def _open(url: str, timeout: float, offset: int):
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def download_file(
    url: str,
    target: str | Path,
    md5: str,
    progress: bool = True,
    timeout: float = 60.0,
    folder_hint: str | None = None,
    resume: bool = False,
) -> Path:
    """Fetch ``url`` to ``target`` unless a file with the right MD5 is already there.

    The body streams into a temporary file beside ``target`` while its MD5 is computed; it is renamed to
    ``target`` only when the byte count matches Content-Length and the MD5 matches, so a corrupt or partial
    ``target`` is never trusted. Without ``resume`` the temporary file is ``.<name>.part-<random>`` and any
    failure removes it. With ``resume`` (large archives) it is ``.<name>.partial``: a download that is cut
    off keeps it, and the next call continues from its end with an HTTP ``Range`` request (a server that
    answers with the whole file instead restarts it); an MD5 mismatch still deletes it.
    """
    target = Path(target)
    if target.exists() and md5_of_file(target) == md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        partial = target.with_name(f".{target.name}.partial")
    else:
        partial = target.with_name(f".{target.name}.part-{uuid.uuid4().hex}")
    hint = _manual_hint(url, target, md5, folder_hint)
    digest = hashlib.md5()
    offset = partial.stat().st_size if resume and partial.exists() else 0
    keep_partial = False
    try:
        from tqdm.auto import tqdm

        with _open(url, timeout, offset) as response:
            if offset and response.status == 206 and response.headers.get(
                "Content-Range", ""
            ).startswith(f"bytes {offset}-"):
                with open(partial, "rb") as previous:
                    for chunk in iter(lambda: previous.read(_CHUNK), b""):
                        digest.update(chunk)
                mode = "ab"
            else:
                offset, mode = 0, "wb"
            length_header = response.headers.get("Content-Length")
            expected = offset + int(length_header) if length_header else None
            received = offset
            with open(partial, mode) as out, tqdm(
                total=expected, initial=offset, unit="B", unit_scale=True, desc=target.name,
                disable=not progress,
            ) as bar:
                keep_partial = resume
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != expected:
            kept = f" {received} bytes are kept in {partial}; run again to resume." if resume else (
                " nothing was kept.")
            raise DownloadError(
                f"download of {url} was cut off after {received} of {expected} bytes;{kept} "
                f"Retry, or: {hint}"
            )
        keep_partial = False
        if digest.hexdigest() != md5:
            raise DownloadError(
                f"MD5 mismatch for {url}: got {digest.hexdigest()}, expected {md5}; the file is corrupt "
                f"or not the official one and was deleted. Retry, or: {hint}"
            )
        os.replace(partial, target)
    except DownloadError:
        if not keep_partial:
            partial.unlink(missing_ok=True)
        raise
    except (TimeoutError, urllib.error.URLError, HTTPException, OSError) as error:
        if not keep_partial:
            partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        kept = f" (the {partial.stat().st_size} bytes so far are kept in {partial}; run again to resume)" if (
            keep_partial and partial.exists()) else ""
        raise DownloadError(f"could not download {url} ({reason}){kept}. {hint}") from error
    except BaseException:  # KeyboardInterrupt etc.: a resumable partial file stays, others never do
        if not keep_partial:
            partial.unlink(missing_ok=True)
        raise
    return target


def _extract_tar(archive: Path, destination: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(
                destination, filter="data"
            )  # refuses absolute paths, "..", device files, links out
        else:  # Python < 3.11.4: check member paths ourselves
            root = destination.resolve()
            for member in tar.getmembers():
                path = (destination / member.name).resolve()
                outside = root not in path.parents and path != root
                if outside or member.issym() or member.islnk():
                    raise DownloadError(f"refusing unsafe member {member.name!r} in {archive}")
            tar.extractall(destination)


def download_and_extract(
    url: str,
    md5: str,
    root: str | Path,
    archive_name: str,
    folder: str,
    required_files: Sequence[str],
    progress: bool = True,
    timeout: float = 60.0,
    resume: bool = False,
) -> Path:
    """Make ``root/folder`` exist with ``required_files``, downloading and extracting ``archive_name``.

    An already complete folder is used as is. Otherwise the verified archive (see ``download_file``) is
    extracted into a temporary folder under ``root`` and moved into place with one rename; an incomplete
    ``root/folder`` left by an earlier attempt is replaced.
    """
    root = Path(root)
    final = root / folder
    if all((final / name).is_file() for name in required_files):
        return final
    archive = download_file(url, root / archive_name, md5, progress, timeout, folder_hint=folder,
                            resume=resume)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.extract-", dir=root))
    try:
        _extract_tar(archive, staging)
        missing = [name for name in required_files if not (staging / folder / name).is_file()]
        if missing:
            raise DownloadError(
                f"{archive} does not contain {folder}/{missing[0]}; it is not the expected archive"
            )
        if final.exists():
            stale = root / f".{folder}.stale-{uuid.uuid4().hex}"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(staging / folder, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
