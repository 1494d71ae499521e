"""report.html: self-contained (images inline), escaped, and rendered for real by headless Chromium."""

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from clusterloss.viz.report import render_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png(path, colour, size=(320, 200)):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def report_inputs(tmp_path):
    images = {"curves": png(tmp_path / "c.png", (200, 30, 30)),
              "tsne": png(tmp_path / "t.png", (30, 160, 60)),
              "retrieval": png(tmp_path / "r.png", (40, 60, 200))}
    metrics = {"nmi": 0.61234, "nmi_std": 0.004, "ami": 0.5, "ami_std": 0.003, "recall@1": 0.75,
               "recall@2": 0.8, "precision@1": 0.75, "r_precision": 0.4, "map@r": 0.3, "num_samples": 540}
    config = {"data": {"name": "digits", "protocol": "zero_shot"}, "model": {"name": "convnet",
              "embedding_dim": 64}, "loss": {"name": "facility_location"}, "train": {"lr": 0.1}}
    return dict(run_name="run <demo>", config=config, metrics=metrics, images=images)


def test_report_is_self_contained_and_complete(report_inputs):
    text = render_report(**report_inputs)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(uris) == 3
    assert Image.open(io.BytesIO(base64.b64decode(uris[1]))).getpixel((5, 5)) == (30, 160, 60)
    assert "run &lt;demo&gt;" in text and "<demo>" not in text  # escaped
    for needle in ("dataset: digits", "model: convnet (dim 64)", "loss: facility_location", "61.23 ± 0.40",
                   "MAP@R", "R-Precision", "540", "zero_shot"):
        assert needle in text, needle
    assert not re.search(r'(src|href)="(https?:|file:|/)', text)  # nothing fetched from elsewhere


def test_missing_pictures_are_noted_not_fatal(report_inputs):
    report_inputs["images"] = {"curves": None}
    text = render_report(**report_inputs)
    assert text.count("not available") == 3 and "data:image" not in text


@pytest.mark.slow
def test_headless_chromium_renders_the_page(report_inputs, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    out = write_report(tmp_path / "report.html", **report_inputs)
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           out.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (1600, 1200, 3)
    colours = {tuple(c) for c in pixels[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 50  # text, header gradient, cards: not a blank page
    # The header gradient, and the embedded curves picture (solid red) below the metrics, are on screen.
    assert (np.abs(pixels[20:100, 20:600].astype(int) - (11, 110, 79)).sum(axis=2) < 60).any()
    assert (np.abs(pixels.astype(int) - (200, 30, 30)).sum(axis=2) < 10).sum() > 10_000
