"""The HTML report opened in a real headless Chromium: tables present, every embedded figure decoded."""
import re
import shutil
import subprocess

import pytest
import torch
from PIL import Image

from taskfuse.bench.grid import benchmarked_methods

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]



def _chromium(tmp_path, *args):
    assert CHROMIUM, "Debian chromium is not installed; scripts/install_task_data.sh installs it"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_rendered_dom_has_every_method_and_decoded_figures(tiny_bench, tmp_path):
    _, report, _, _ = tiny_bench
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", (report / "report.html").as_uri()).stdout
    assert 'data-images-ok="true"' in dom
    results = re.search(r'<div id="results">(.*?)</div>', dom, re.S).group(1)
    for method in benchmarked_methods():
        assert f"<td>{method}</td>" in results
    assert "zero-shot (base encoder)" in results


def test_the_screenshot_is_not_blank(tiny_bench, tmp_path):
    _, report, _, _ = tiny_bench
    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", "--virtual-time-budget=5000",
              (report / "report.html").as_uri())
    pixels = torch.tensor(list(Image.open(shot).convert("L").getdata()), dtype=torch.float32)
    assert pixels.numel() == 1280 * 2400
    assert pixels.std() > 10  # text, tables and figures, not a white page
