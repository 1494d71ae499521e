"""CUB-200-2011's checked, atomic, resumable download, against a local 127.0.0.1 server."""

import hashlib

import pytest

from clusterloss.data import cub, load_dataset
from clusterloss.data.download import DownloadError
from clusterloss.data.image_cache import PhotoOptions


@pytest.fixture
def cub_archive(tmp_path, official):
    source = tmp_path / "source"
    official.cub(source, class_ids=(1, 2, 101, 102), per_class=3)
    return official.tar_gz(source, "CUB_200_2011")


def _serve(monkeypatch, server, archive, md5=None):
    server.files["/CUB_200_2011.tgz"] = archive
    monkeypatch.setattr(cub, "CUB_URL", server.url("/CUB_200_2011.tgz"))
    monkeypatch.setattr(cub, "CUB_MD5", md5 or hashlib.md5(archive).hexdigest())


def _options(tmp_path):
    return PhotoOptions(image_size=24, cache_dir=str(tmp_path / "cache"), workers=1)


def _leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_checks_extracts_and_is_reused(tmp_path, monkeypatch, archive_server, cub_archive):
    _serve(monkeypatch, archive_server, cub_archive)
    root = tmp_path / "data"
    data = load_dataset("cub200", "all", root, download=True, options=_options(tmp_path))
    assert len(data) == 12 and data.zero_shot_train_classes == [0, 1]
    assert _leftovers(root) == ["CUB_200_2011", "CUB_200_2011.tgz"]
    requests = archive_server.requests
    load_dataset("cub200", "train", root, download=True, options=_options(tmp_path))
    assert archive_server.requests == requests


def test_interrupted_download_resumes_with_a_range_request(
    tmp_path, monkeypatch, archive_server, cub_archive
):
    _serve(monkeypatch, archive_server, cub_archive)
    archive_server.cut_after = len(cub_archive) // 3
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="resume"):
        load_dataset("cub200", "all", root, download=True, options=_options(tmp_path))
    assert _leftovers(root) == [".CUB_200_2011.tgz.partial"]  # kept to resume; never taken as the archive
    assert (root / ".CUB_200_2011.tgz.partial").stat().st_size == len(cub_archive) // 3
    archive_server.cut_after = None
    data = load_dataset("cub200", "all", root, download=True, options=_options(tmp_path))
    assert archive_server.range_requests == [len(cub_archive) // 3] and len(data) == 12
    assert hashlib.md5((root / "CUB_200_2011.tgz").read_bytes()).hexdigest() == cub.CUB_MD5
    assert _leftovers(root) == ["CUB_200_2011", "CUB_200_2011.tgz"]


def test_server_without_ranges_restarts_and_md5_mismatch_keeps_nothing(
    tmp_path, monkeypatch, archive_server, cub_archive
):
    _serve(monkeypatch, archive_server, cub_archive)
    root = tmp_path / "data"
    root.mkdir()
    (root / ".CUB_200_2011.tgz.partial").write_bytes(b"garbage from another file")
    archive_server.ranges = False  # answers 200 with the whole file: the partial file is restarted
    assert len(load_dataset("cub200", "all", root, download=True, options=_options(tmp_path))) == 12
    other = tmp_path / "other"
    _serve(monkeypatch, archive_server, cub_archive, md5="0" * 32)
    with pytest.raises(DownloadError, match="MD5 mismatch"):
        load_dataset("cub200", "all", other, download=True, options=_options(tmp_path))
    assert _leftovers(other) == []
