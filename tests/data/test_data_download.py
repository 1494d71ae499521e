import dataclasses
import hashlib
import socket

import pytest
import torch

from clusterloss.data import cifar, load_dataset
from clusterloss.data.download import DownloadError, download_and_extract


@pytest.fixture
def cifar10_archive(tmp_path, official):
    source = tmp_path / "source"
    official.cifar10(source, per_batch=4)
    return official.tar_gz(source, "cifar-10-batches-py")


def _serve(monkeypatch, server, archive: bytes, md5: str | None = None):
    server.files["/cifar-10-python.tar.gz"] = archive
    spec = dataclasses.replace(
        cifar.CIFAR10, url=server.url("/cifar-10-python.tar.gz"), md5=md5 or hashlib.md5(archive).hexdigest()
    )
    monkeypatch.setattr(cifar, "CIFAR10", spec)
    return spec


def _leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_verifies_and_extracts(tmp_path, monkeypatch, archive_server, cifar10_archive):
    _serve(monkeypatch, archive_server, cifar10_archive)
    root = tmp_path / "data"
    train = load_dataset("cifar10", "train", root, download=True)
    assert train.images.shape == (20, 3, 32, 32)
    assert _leftovers(root) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no temp files left
    requests = archive_server.requests
    assert load_dataset("cifar10", "test", root, download=True).images.shape == (4, 3, 32, 32)
    assert torch.equal(load_dataset("cifar10", "train", root).images, train.images)
    assert archive_server.requests == requests  # the extracted folder is reused, nothing fetched again


def test_md5_mismatch_leaves_nothing_in_place(tmp_path, monkeypatch, archive_server, cifar10_archive):
    _serve(monkeypatch, archive_server, cifar10_archive, md5="0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="MD5 mismatch"):
        load_dataset("cifar10", "train", root, download=True)
    assert _leftovers(root) == []


def test_interrupted_download_is_not_trusted_and_retry_works(
    tmp_path, monkeypatch, archive_server, cifar10_archive
):
    _serve(monkeypatch, archive_server, cifar10_archive)
    archive_server.cut_after = len(cifar10_archive) // 2
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="cut off|could not download"):
        load_dataset("cifar10", "train", root, download=True)
    assert _leftovers(root) == []
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10", "train", root)  # nothing half-written is picked up later
    archive_server.cut_after = None
    assert len(load_dataset("cifar10", "train", root, download=True)) == 20


def test_corrupt_archive_already_on_disk_is_replaced(tmp_path, monkeypatch, archive_server, cifar10_archive):
    spec = _serve(monkeypatch, archive_server, cifar10_archive)
    root = tmp_path / "data"
    root.mkdir()
    (root / spec.archive).write_bytes(cifar10_archive[:100])  # e.g. a browser download that died
    (root / spec.folder).mkdir()  # and an incomplete folder
    assert len(load_dataset("cifar10", "test", root, download=True)) == 4
    assert (root / spec.archive).read_bytes() == cifar10_archive


def test_no_network_error_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = dataclasses.replace(cifar.CIFAR10, url=f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar, "CIFAR10", spec)
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        load_dataset("cifar10", "train", root, download=True)
    message = str(info.value)
    assert spec.url in message and str(root / "cifar-10-python.tar.gz") in message
    assert str(root / "cifar-10-batches-py") in message and spec.md5 in message
    assert _leftovers(root) == []


def test_archive_without_expected_files_is_rejected(tmp_path, archive_server, official):
    source = tmp_path / "source"
    official.cifar100(source)
    archive = official.tar_gz(source, "cifar-100-python")
    archive_server.files["/a.tar.gz"] = archive
    with pytest.raises(DownloadError, match="does not contain"):
        download_and_extract(
            archive_server.url("/a.tar.gz"),
            hashlib.md5(archive).hexdigest(),
            tmp_path / "d",
            "a.tar.gz",
            "cifar-10-batches-py",
            ["data_batch_1"],
            progress=False,
        )
    assert _leftovers(tmp_path / "d") == ["a.tar.gz"]
