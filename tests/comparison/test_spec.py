"""Protocol files: trial points (same count for every loss), overrides, and errors that name the problem."""

import itertools

import pytest
import yaml

from clusterloss.comparison.spec import Entry, load_protocol, point_overrides, trial_points
from clusterloss.config import load_config


def _write(tmp_path, body):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


BASE = {"name": "t", "config": "digits_convnet", "tune": {"trials": 2, "metric": "map@r"},
        "final": {"seeds": 3},
        "losses": {"facility_location": {"space": {"loss.margin_multiplier": [1.0, 3.0]}},
                   "triplet_semihard": {"space": {"loss.options.margin": [0.2, 0.1, 0.05]}}}}


def test_trial_points_whole_grid_or_first_plus_seeded_sample():
    entry = Entry("a", "a", space={"train.lr": [1, 2, 3], "loss.options.margin": [0.1, 0.2]})
    grid = [dict(zip(entry.space, v, strict=True)) for v in itertools.product(*entry.space.values())]
    assert trial_points(entry, 6) == grid
    four = trial_points(entry, 4)
    assert len(four) == 4 and four[0] == grid[0] and all(p in grid for p in four)
    assert len({tuple(p.items()) for p in four}) == 4, "drawn without replacement"
    assert trial_points(entry, 4) == four, "the draw is a function of the entry's name"
    with pytest.raises(ValueError, match="fewer than tune.trials"):
        trial_points(entry, 7)
    assert trial_points(Entry("b", "b"), 1) == [{}]


def test_point_overrides_round_trip_through_the_config():
    point = {"train.lr": 0.003, "loss.options.margin": 0.1, "loss.margin_type": "ami",
             "train.milestones": [0.5]}
    config = load_config(None, point_overrides(point))
    assert config.train.lr == 0.003 and config.loss.options == {"margin": 0.1}
    assert config.loss.margin_type == "ami" and config.train.milestones == [0.5]


def test_load_protocol_defaults_and_equal_trials(tmp_path):
    p = load_protocol(_write(tmp_path, BASE))
    assert p.reference == "facility_location" and p.trials == 2 and p.tune_seeds == [0]
    assert p.config.name == "digits_convnet.yaml" and p.entries["triplet_semihard"].loss == "triplet_semihard"
    too_few = {**BASE, "tune": {"trials": 3}}
    with pytest.raises(ValueError, match="facility_location.space has 2 point"):
        load_protocol(_write(tmp_path, too_few))


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "unknown key"),
    ({"reference": "npairs"}, "reference 'npairs'"),
    ({"trainer": "gpu"}, "trainer must be"),
    ({"config": "no_such_config"}, "base config"),
    ({"final": {}}, "missing key 'seeds'"),
    ({"losses": {"a": {"space": {"lr": [1]}}}}, "section.key"),
    ({"losses": {"a": {"space": {"train.lr": []}}}}, "non-empty list"),
    ({"set": ["train.epochs"]}, "overrides"),
])
def test_bad_protocols_are_value_errors(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_protocol(_write(tmp_path, {**BASE, **change}))


def test_yaml_errors_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("set: [eval.kmeans_seeds=[0]]\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_protocol(bad)
    with pytest.raises(ValueError, match="not found"):
        load_protocol(tmp_path / "missing.yaml")


def test_shipped_protocols_load():
    from clusterloss.config_files import PACKAGED_CONFIGS

    files = sorted((PACKAGED_CONFIGS / "compare").glob("*.yaml"))
    for path in files:
        protocol = load_protocol(path)
        assert protocol.final_seeds >= 3
        assert len({len(trial_points(e, protocol.trials)) for e in protocol.entries.values()}) == 1
