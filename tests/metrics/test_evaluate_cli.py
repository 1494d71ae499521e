"""`clusterloss evaluate` in query / gallery mode: separate gallery files, the query_mask.npy of extract."""

import json

import numpy as np
import pytest

from clusterloss.analysis import Extracted, load_extracted, save_extracted
from clusterloss.cli import main
from clusterloss.metrics import evaluate_embeddings


def split(seed=0, nq=40, ng=60, classes=6, d=5):
    rng = np.random.default_rng(seed)
    yq, yg = rng.integers(0, classes, nq), rng.integers(0, classes, ng)
    centres = rng.normal(size=(classes, d)) * 2
    xq = (centres[yq] + rng.normal(size=(nq, d))).astype(np.float32)
    xg = (centres[yg] + rng.normal(size=(ng, d))).astype(np.float32)
    return xq, yq, xg, yg


def test_separate_gallery_files_give_evaluate_embeddings_with_a_gallery(tmp_path):
    xq, yq, xg, yg = split()
    for name, arr in {"q": xq, "ql": yq, "g": xg, "gl": yg}.items():
        np.save(tmp_path / f"{name}.npy", arr)
    out = tmp_path / "m.json"
    rc = main(["evaluate", "--embeddings", str(tmp_path / "q.npy"), "--labels", str(tmp_path / "ql.npy"),
               "--gallery-embeddings", str(tmp_path / "g.npy"), "--gallery-labels", str(tmp_path / "gl.npy"),
               "--ks", "1", "10", "20", "--seeds", "0", "--out", str(out)])
    assert rc == 0
    got = json.loads(out.read_text())
    want = evaluate_embeddings(xq, yq, (1, 10, 20), (0,), gallery_embeddings=xg, gallery_labels=yg)
    assert got == pytest.approx(want)
    assert (got["num_queries"], got["num_gallery"]) == (40, 60)


def test_extract_writes_the_query_mask_and_evaluate_uses_it(tmp_path):
    xq, yq, xg, yg = split(seed=1)
    x, y = np.concatenate([xg, xq]), np.concatenate([yg, yq])
    mask = np.arange(len(x)) >= len(xg)
    paths = save_extracted(Extracted(embeddings=x, labels=y, images=None, class_names=None,
                                     meta={"dataset": "inshop"}, query_mask=mask), tmp_path)
    assert np.array_equal(np.load(paths["query_mask"]), mask)
    assert json.loads(paths["meta"].read_text())["query_mask"] == "query_mask.npy"
    assert np.array_equal(load_extracted(paths["embeddings"], paths["labels"]).query_mask, mask)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--embeddings", str(paths["embeddings"]), "--labels", str(paths["labels"]),
                 "--nmi-on", "query", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    want = evaluate_embeddings(x, y, query_mask=mask, clustering_on="query")
    assert got == pytest.approx(want)
    # The same numbers as handing over the two sets separately (NMI on the queries: same points, same order).
    assert got == pytest.approx(evaluate_embeddings(xq, yq, gallery_embeddings=xg, gallery_labels=yg,
                                                    clustering_on="query"))


def test_bad_query_gallery_arguments_end_in_one_error_line(tmp_path, capsys):
    xq, yq, xg, yg = split(seed=2)
    np.save(tmp_path / "q.npy", xq)
    np.save(tmp_path / "ql.npy", yq)
    np.save(tmp_path / "g.npy", xg)
    np.save(tmp_path / "mask.npy", np.ones(7, bool))
    base = ["evaluate", "--embeddings", str(tmp_path / "q.npy"), "--labels", str(tmp_path / "ql.npy")]
    assert main(base + ["--gallery-embeddings", str(tmp_path / "g.npy")]) == 1
    assert "--gallery-labels" in capsys.readouterr().err
    assert main(base + ["--query-mask", str(tmp_path / "mask.npy")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bool [40]" in err and err.count("\n") == 1
