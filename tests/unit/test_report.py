"""The HTML report: self-contained, complete on a full run, "not run" notices on a partial one,
and rendered by headless Chromium (screenshot non-blank, every image decodes) when Chromium is installed."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from analysis_fixtures import make_run
from cotdistill.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects <img> sources, <script>/<link> tags, section ids and "not run" notices."""

    def __init__(self):
        super().__init__()
        self.imgs, self.scripts, self.links, self.sections = [], 0, 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "link":
            self.links += 1
        elif tag == "section":
            self.sections.append(a.get("id"))


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p


def _decode_pngs(srcs: list[str]) -> list:
    from PIL import Image

    out = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == PNG
        img = Image.open(io.BytesIO(raw))
        img.load()
        out.append(img.size)
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir):
    from cotdistill.analysis import analyze_run

    run = make_run(tmp_path_factory.mktemp("report") / "demo-run", str(tiny_model_dir))
    analyze_run(run, progress=False, echo=lambda s: None)
    write_report(run)
    return run


def test_full_report_is_self_contained(full_run):
    text = (full_run / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    assert page.scripts == 0 and page.links == 0
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched from the network
    assert page.sections == ["config", "data", "training", "weights", "eval", "latent", "forgetting", "provenance"]
    sizes = _decode_pngs(page.imgs)
    assert len(sizes) >= 6 and all(w > 200 and h > 200 for w, h in sizes)
    assert "Not run" not in text
    # evaluation table: accuracy with CI and delta vs base; ID and OOD columns
    assert "55.0" in text and "(+15.0)" in text and "[50.0, 60.0]" in text and "(-2.0)" in text
    assert ">OOD<" in text and ">ID<" in text
    assert "Linear CKA vs base" in text and "dropped_incorrect" in text and "alpha" in text


def test_partial_run_shows_not_run_sections(tmp_path):
    run = make_run(tmp_path / "bare", "x", dynamics=False, evals=False, card=False)
    out = write_report(run, tmp_path / "custom.html")
    text = out.read_text(encoding="utf-8")
    assert out.name == "custom.html" and not (run / "report.html").exists()
    for what in ("data card", "training curves", "weight dynamics", "evaluation", "latent-space analysis",
                 "linear CKA", "provenance"):
        assert f"<b>Not run:</b> {what}" in text
    assert _parse(text).imgs == []
    # an empty folder (not even config.yaml) still renders
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "<b>Not run:</b> configuration" in write_report(empty).read_text()


def test_dynamics_figures_drawn_without_analysis(tmp_path):
    run = make_run(tmp_path / "r", "x", evals=False)
    text = write_report(run).read_text()
    assert len(_parse(text).imgs) == 2 and not (run / "analysis").exists()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chromium-headless-shell"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(full_run, tmp_path):
    from PIL import Image, ImageStat

    exe = _chromium()
    url = (full_run / "report.html").resolve().as_uri()
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
              "--virtual-time-budget=3000"]
    shot = tmp_path / "shot.png"
    r = subprocess.run(common + ["--window-size=1280,2400", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # console messages and page errors are logged as "CONSOLE(...)" lines on stderr
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    stat = ImageStat.Stat(img)
    assert stat.stddev[0] > 20  # not blank: text, tables and figures
    assert len(img.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50

    r = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = _parse(r.stdout)
    assert dom.sections[0] == "config" and len(dom.sections) == 8
    assert len(_decode_pngs(dom.imgs)) >= 6
    shutil.copy(shot, full_run / "report_screenshot.png")  # kept next to the report for a human look
