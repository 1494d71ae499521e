import json
import math

import numpy as np
import pytest

from clusterloss import experiments
from clusterloss.cli import main
from clusterloss.viz.comparison import plot_comparison


def test_summarize_matches_numpy():
    runs = [{"nmi": 0.5, "recall@1": 0.25}, {"nmi": 0.7, "recall@1": 0.75}, {"nmi": 0.6, "recall@1": 0.5}]
    summary = experiments.summarize(runs)
    assert summary["nmi"] == pytest.approx((np.mean([0.5, 0.7, 0.6]), np.std([0.5, 0.7, 0.6])))
    assert summary["recall@1"] == pytest.approx((0.5, np.std([0.25, 0.75, 0.5])))


def test_comparison_table_shows_percent_and_std():
    table = experiments.comparison_table({"a": {"nmi": 0.5, "recall@1": 0.25}, "bb": {"nmi": (0.6, 0.01)}},
                                     metrics=("nmi", "recall@1"))
    lines = table.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["", "NMI", "R@1"]
    assert set(lines[1]) <= {"|", "-", ":"}
    assert cells[2] == ["a", "50.00", "25.00"]
    assert cells[3] == ["bb", "60.00 ± 1.00", "—"]
    assert len({len(line) for line in lines}) == 1, "columns are aligned"


def test_per_loss_override_applies_to_its_loss_only():
    opts = ["triplet_semihard:loss.options.margin=0.1", "npairs:train.lr=0.01", "triplet_semihard:train.lr=1"]
    assert experiments._per_loss_overrides(opts, "triplet_semihard") == ["loss.options.margin=0.1",
                                                                          "train.lr=1"]
    assert experiments._per_loss_overrides(opts, "facility_location") == []
    for bad in ("margin=0.1", "npairs:lr=0.1", "npairs:train.lr"):
        with pytest.raises(ValueError, match="LOSS:section.key=value"):
            experiments._per_loss_overrides([bad], "npairs")


def test_find_config_by_name_and_error():
    assert experiments.find_config("digits_convnet").name == "digits_convnet.yaml"
    with pytest.raises(ValueError, match="not found"):
        experiments.find_config("no_such_config")


def test_plot_comparison_writes_png(tmp_path):
    out = plot_comparison({"a": {"nmi": (0.5, 0.1), "map@r": (0.2, 0.0)}, "b": {"nmi": (0.6, 0.05)}},
                          tmp_path / "c.png", metrics=("nmi", "map@r", "recall@8"), title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_comparison({}, tmp_path / "d.png")


TINY = ["train.epochs=1", "train.steps_per_epoch=3", "train.progress=false", "eval.kmeans_seeds=[0]"]


@pytest.mark.slow
def test_compare_trains_each_loss_and_never_redoes_finished_runs(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    losses = ["facility_location", "triplet_semihard"]
    result = experiments.compare("digits_convnet", losses, seeds=2, out=out, overrides=TINY)
    assert set(result["summary"]) == {"facility_location", "triplet_semihard"}
    for loss in result["summary"]:
        assert len(result["runs"][loss]) == 2
        mean, std = result["summary"][loss]["nmi"]
        values = [r["nmi"] for r in result["runs"][loss]]
        assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values))
        assert 0 <= mean <= 1 and math.isfinite(std)
    # Different seeds really are different runs.
    runs = result["runs"]["facility_location"]
    assert runs[0]["nmi"] != runs[1]["nmi"] or runs[0]["recall@1"] != runs[1]["recall@1"]
    saved = json.loads((out / "compare.json").read_text())
    assert saved["seeds"] == 2 and set(saved["summary"]) == set(result["summary"])
    assert "facility_location" in (out / "compare.md").read_text()
    assert (out / "compare.png").stat().st_size > 1000

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("clusterloss.train.train", fail)
    again = experiments.compare("digits_convnet", losses, seeds=2, out=out, overrides=TINY)
    assert again["summary"] == result["summary"]
    for loss in result["summary"]:
        assert again["runs"][loss] == result["runs"][loss]
    # Other settings in the same folder would mix budgets in one table: refused, naming the key.
    with pytest.raises(ValueError, match=r"train.epochs: 1 -> 2"):
        experiments.compare("digits_convnet", losses, seeds=2, out=out, overrides=[*TINY, "train.epochs=2"])


def test_compare_rejects_unknown_loss(tmp_path):
    with pytest.raises(ValueError, match="unknown loss"):
        experiments.compare("digits_convnet", ["facility_location", "no_such_loss"], seeds=1, out=tmp_path)


@pytest.mark.slow
def test_quickstart_cli_writes_the_whole_run(tmp_path, capsys):
    run_dir = tmp_path / "qs"
    assert main(["quickstart", "--run-dir", str(run_dir), *[a for s in TINY for a in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    for row in ("raw pixels", "untrained network", "trained (facility location)", "report.html"):
        assert row in printed
    for name in ("metrics.json", "tsne.png", "retrieval.png", "curves.png", "report.html", "references.json",
                 "embeddings.npy", "labels.npy"):
        assert (run_dir / name).exists(), name
    rows = json.loads((run_dir / "references.json").read_text())
    assert set(rows) == {"raw pixels", "untrained network"}
    for values in rows.values():
        assert 0 <= values["nmi"] <= 1 and 0 <= values["recall@1"] <= 1
    report = (run_dir / "report.html").read_text()
    assert "Against reference points" in report and "raw pixels" in report


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["evaluate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert main(["compare", "--config", "no_such_config", "--seeds", "1"]) == 1
    assert "not found" in capsys.readouterr().err
