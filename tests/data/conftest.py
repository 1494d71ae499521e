"""Writers for small dataset files in the exact official formats, and a local HTTP server for downloads.

``OfficialPickler`` reproduces how the official files were written: CIFAR with Python 2's cPickle
(protocol 2, ``str`` = byte strings as SHORT_BINSTRING/BINSTRING, arrays rebuilt through
``numpy.core.multiarray._reconstruct``); downsampled ImageNet with Python 3 (protocol 3, same numpy global).
It re-creates the shared real CIFAR-10 files byte for byte (checked in test_data_cifar.py).
"""

from __future__ import annotations

import http.server
import io
import pickle
import struct
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from photo_releases import write_cub, write_photo  # tests/photo_releases.py: shared with tests/benchmarks

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct


class OfficialPickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, protocol: int = 2):
        super().__init__(file, protocol=protocol)

    def _save_py2_str(self, obj: bytes) -> None:
        if self.proto >= 3:
            return pickle._Pickler.save_bytes(self, obj)
        header = (
            pickle.SHORT_BINSTRING + bytes([len(obj)])
            if len(obj) < 256
            else (pickle.BINSTRING + struct.pack("<i", len(obj)))
        )
        self.write(header + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        if obj is _reconstruct:  # numpy >= 2 calls it numpy._core.multiarray; the official files predate that
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def official_pickle_bytes(obj, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    OfficialPickler(buffer, protocol).dump(obj)
    return buffer.getvalue()


def write_official_pickle(path: Path, obj, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(official_pickle_bytes(obj, protocol))


def _images(rng, n, side=32):
    return rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 12, seed: int = 0) -> dict:
    """cifar-10-batches-py/ with 5 train batches and a test batch of ``per_batch`` images each."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_official_pickle(
        folder / "batches.meta",
        {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in names], b"num_vis": 3072},
    )
    written = {}
    for name, label in [(f"data_batch_{i}", f"training batch {i} of 5") for i in range(1, 6)] + [
        ("test_batch", "testing batch 1 of 1")
    ]:
        labels = rng.integers(0, 10, size=per_batch).tolist()
        data = _images(rng, per_batch)
        write_official_pickle(
            folder / name,
            {
                b"batch_label": label.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{i:05d}.png".encode() for i in range(per_batch)],
            },
        )
        written[name] = (data, labels)
    return written


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    write_official_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
        },
    )
    written = {}
    for name, n, label in [
        ("train", n_train, "training batch 1 of 1"),
        ("test", n_test, "testing batch 1 of 1"),
    ]:
        fine = rng.integers(0, 100, size=n).tolist()
        coarse = [f // 5 for f in fine]
        data = _images(rng, n)
        write_official_pickle(
            folder / name,
            {
                b"filenames": [f"f{i}.png".encode() for i in range(n)],
                b"batch_label": label.encode(),
                b"fine_labels": fine,
                b"coarse_labels": coarse,
                b"data": data,
            },
        )
        written[name] = (data, fine, coarse)
    return written


def write_imagenet(root: Path, side: int = 8, per_batch: int = 7, npz: bool = False, seed: int = 0) -> dict:
    """Imagenet{side}_train/train_data_batch_1..10 and Imagenet{side}_val/val_data (labels 1..1000)."""
    rng = np.random.default_rng(seed)
    suffix = "_npz" if npz else ""
    files = [(f"Imagenet{side}_train{suffix}/train_data_batch_{i}", per_batch) for i in range(1, 11)]
    files.append((f"Imagenet{side}_val{suffix}/val_data", per_batch + 3))
    written = {}
    for relative, n in files:
        data = _images(rng, n, side)
        labels = rng.integers(1, 1001, size=n).tolist()
        content = {"data": data, "labels": labels, "mean": data.mean(axis=0)}
        path = root / relative
        if npz:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(str(path) + ".npz", **content)
        else:
            write_official_pickle(path, content, protocol=3)
        written[relative] = (data, labels)
    return written


def write_image_folder(root: Path, counts: dict[str, int], size=(40, 30), suffix: str = ".png") -> dict:
    """root/<class>/<i><suffix> for each class; returns {relative path: RGB pixels}."""
    written = {}
    seed = 0
    for name, count in counts.items():
        for i in range(count):
            relative = f"{name}/{i:03d}{suffix}"
            written[relative] = write_photo(root / relative, seed, size)
            seed += 1
    return written


CARS_FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")


def write_cars(root: Path, class_ids=(1, 2, 98, 99, 150, 196), per_class: int = 2, fields=CARS_FIELDS,
               size=(40, 30), override=None) -> dict:
    """root/car_ims/NNNNNN.jpg + root/cars_annos.mat in the official layout (scipy.io.savemat of a 1 x N
    struct array with MATLAB-style 1x1 numeric fields and a 1 x 196 cell array of class names); ``override``:
    {annotation index: {field: value}} to write malformed records."""
    import scipy.io

    records = []
    for class_id in class_ids:
        for i in range(per_class):
            n = len(records) + 1
            relative = f"car_ims/{n:06d}.jpg"
            write_photo(root / relative, 100 + n, size, fmt="JPEG")
            records.append({"relative_im_path": np.array([relative]), "bbox_x1": np.array([[3]], np.uint8),
                            "bbox_y1": np.array([[2]], np.uint8), "bbox_x2": np.array([[30]], np.uint8),
                            "bbox_y2": np.array([[25]], np.uint8), "class": np.array([[class_id]], np.uint8),
                            "test": np.array([[i % 2]], np.uint8)})
    for index, changes in (override or {}).items():
        records[index].update(changes)
    annotations = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for j, record in enumerate(records):
        for f in fields:
            annotations[0, j][f] = record[f]
    names = np.empty((1, 196), dtype=object)
    for c in range(196):
        names[0, c] = np.array([f"Make{c + 1} Model {2000 + c % 13}"])
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": names})
    return {"records": records}


def write_sop(root: Path, train_classes=(1, 2, 3), test_classes=(4, 5), per_class: int = 2,
              lines: dict | None = None) -> Path:
    """root/Stanford_Online_Products/ with Ebay_train.txt / Ebay_test.txt (official header) and images
    ``<super>_final/<product>_<n>.JPG``; super class = 1 + class % 2 (bicycle, cabinet). ``lines``:
    {file name: extra raw lines appended} for malformed files."""
    folder = root / "Stanford_Online_Products"
    supers = {1: "bicycle", 2: "cabinet"}
    image_id = 0
    for name, classes in (("Ebay_train.txt", train_classes), ("Ebay_test.txt", test_classes)):
        rows = ["image_id class_id super_class_id path"]
        for class_id in classes:
            super_id = 1 + class_id % 2
            for i in range(per_class):
                image_id += 1
                relative = f"{supers[super_id]}_final/{111000 + class_id}_{i}.JPG"
                write_photo(folder / relative, 300 + image_id, (36, 28), fmt="JPEG")
                rows.append(f"{image_id} {class_id} {super_id} {relative}")
        rows += (lines or {}).get(name, [])
        (folder / name).write_text("\n".join(rows) + "\n")
    return folder


def write_inshop(
    root: Path, train_items=2, test_items=2, per_item: int = 3, extra: list | None = None
) -> dict:
    """root/Eval/list_eval_partition.txt (count line, header, rows) and root/img/...; each test item has one
    query and the rest gallery images. ``extra``: raw lines appended (the count follows them)."""
    rows, statuses = [], []
    number = 0
    for side, count in (("train", train_items), ("test", test_items)):
        for _ in range(count):
            number += 1
            item = f"id_{number:08d}"
            for i in range(per_item):
                relative = f"img/WOMEN/Dresses/{item}/{i + 1:02d}_1_front.jpg"
                write_photo(root / relative, 500 + number * 10 + i, (30, 40), fmt="JPEG")
                status = "train" if side == "train" else ("query" if i == 0 else "gallery")
                rows.append(f"{relative} {item} {status}")
                statuses.append(status)
    rows += extra or []
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n")
    return {"statuses": statuses}


def make_tar_gz(source: Path, folder: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / folder, arcname=folder)
    return buffer.getvalue()


class ArchiveServer:
    """http.server on 127.0.0.1 in a thread; ``cut_after`` bytes makes it close mid-body."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.requests = 0
        self.ranges = True  # answer "Range: bytes=N-" with 206 and the rest of the file
        self.range_requests: list[int] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range", "")
                if server.ranges and wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[len("bytes="):-1])
                    server.range_requests.append(start)
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                body = body[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is None:
                    self.wfile.write(body)
                else:
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive_server():
    server = ArchiveServer()
    yield server
    server.close()


@pytest.fixture
def official():
    """The writers above (test modules can't import this conftest by name: tests/conftest.py shadows it)."""
    return SimpleNamespace(
        pickle_bytes=official_pickle_bytes,
        write_pickle=write_official_pickle,
        cifar10=write_cifar10,
        cifar100=write_cifar100,
        imagenet=write_imagenet,
        tar_gz=make_tar_gz,
        photo=write_photo,
        image_folder=write_image_folder,
        cub=write_cub,
        cars=write_cars,
        sop=write_sop,
        inshop=write_inshop,
    )
