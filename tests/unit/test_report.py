"""The HTML report: self-contained, complete on a full run, "not run" notices on a partial one,
and rendered by headless Chromium (screenshot non-blank, every image decodes) when Chromium is installed."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

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
    assert page.sections == ["summary", "config", "data", "training", "weights", "eval", "latent", "forgetting", "provenance"]
    sizes = _decode_pngs(page.imgs)
    assert len(sizes) >= 6 and all(w > 200 and h > 200 for w, h in sizes)
    assert "Not run" not in text
    # evaluation table: accuracy with CI and delta vs base; ID and OOD columns
    assert "55.0" in text and "(+15.0)" in text and "[50.0, 60.0]" in text and "(-2.0)" in text
    assert ">OOD<" in text and ">ID<" in text
    assert "Linear CKA vs base" in text and "dropped_incorrect" in text and "alpha" in text
    # a data card of another layout is still shown whole; the summary card comes first and names the method
    summary = _section(text, "summary")
    assert "mind" in summary and "3 labels: intuitive, analytical, reflective" in summary
    assert "+15.0" in summary and "−2.0" not in summary and "-2.0" in summary


def _section(text: str, sid: str) -> str:
    start = text.index(f'<section id="{sid}">')
    return text[start:text.index("</section>", start)]


def _real_card() -> dict:
    """A data card in the layout curation writes (two teachers × two perspectives)."""
    rows = [{"teacher": t, "perspective": p, "records": 50, "correct": c, "correct_rate": c / 50, "kept_paths": k}
            for (t, p, c, k) in [("gpt-4o", "level2", 45, 40), ("gpt-4o", "level4", 40, 30),
                                 ("llama-3-70b", "level2", 48, 30), ("llama-3-70b", "level4", 35, 20)]]
    return {
        "fingerprint": "f" * 24, "label_scheme": "teacher/perspective",
        "labels": [f"{r['teacher']}/{r['perspective']}" for r in rows],
        "splits": {"train": {"questions": 40, "paths": 120}},
        "questions": {"in_store": 50, "merged_duplicate_ids": 0, "kept": 40,
                      "dropped": {"contaminated": 7, "no_correct_path": 3}},
        "records": {"read": 200, "verdict_changed_on_rescore": 0},
        "paths_dropped": {"incorrect": 32, "near_duplicate": 18, "question_dropped": 30},
        "paths_per_question": {"3": 40},
        "by_teacher_perspective": rows,
        "by_teacher": {"gpt-4o": {"records": 100, "correct": 85, "kept_paths": 70, "correct_rate": 0.85},
                       "llama-3-70b": {"records": 100, "correct": 83, "kept_paths": 50, "correct_rate": 0.83}},
        "by_perspective": {"level2": {"records": 100, "correct": 93, "kept_paths": 70, "correct_rate": 0.93},
                           "level4": {"records": 100, "correct": 75, "kept_paths": 50, "correct_rate": 0.75}},
        "eval_guard": {"benchmarks": ["svamp"], "action": "drop", "contaminated": 7,
                       "contaminated_ids": ["chal-1", "chal-2"]},
        "warnings": ["dropped 7 question(s) that are test questions of svamp"],
    }


def test_summary_card_and_compact_data_card(tmp_path):
    from cotdistill.config import Config, dump_config
    from cotdistill.utils.io import atomic_write_json, atomic_write_text

    run = make_run(tmp_path / "sum", "x", card=False)
    cfg = Config.model_validate({"run": {"name": "sum"}, "method": "mind", "eval": {"benchmarks": ["svamp", "csqa"]},
                                 "train": {"epochs": 5, "max_steps": 12},
                                 "analysis": {"ood_benchmarks": ["csqa"]}})
    atomic_write_text(run / "config.yaml", dump_config(cfg))
    atomic_write_json(run / "dataset" / "data_card.json", _real_card())
    # training stopped before max_steps: the card must report the steps actually run
    atomic_write_json(run / "student" / "cotdistill_train.json",
                      {"method": "mind", "finetune": "lora", "global_step": 7, "epoch": 0.58, "train_loss": 0.91,
                       "train_seconds": 42.0, "base_model": {"model": cfg.train.model}})
    text = write_report(run).read_text(encoding="utf-8")
    page = _parse(text)
    assert page.sections[0] == "summary" and page.scripts == 0
    s = _section(text, "summary")
    assert "<b>mind</b>" in s and cfg.train.model in s
    assert "2 teachers: gpt-4o, llama-3-70b × 2 perspectives: level2, level4" in s
    assert "40 questions, 120 reasoning paths" in s
    assert "<b>7</b> optimizer steps, 0.58 epochs" in s and "12" not in s.split("Training run", 1)[1].split("</dd>")[0]
    # headline table: base vs distilled, accuracy with CI and delta per benchmark, and a CI reading
    assert "40.0%" in s and "[35.0, 45.0]" in s and "55.0%" in s and "[50.0, 60.0]" in s
    assert "+15.0" in s and "-2.0" in s and ">OOD<" in s
    assert "no per-sample outputs: no paired test" in s and "CIs apart" not in s  # separate CIs are no test
    # data card: readable per-teacher table and funnels, raw per-teacher JSON gone, the rest behind <details>
    d = _section(text, "data")
    assert "<th>correct %</th>" in d and "<td class='num'>90.0</td>" in d and "<td class='num'>70.0</td>" in d
    assert "<td class='num'>84.0</td>" in d  # total correct rate 168/200
    shown = d[:d.index("<details>")]
    assert "correct_rate" not in shown and "by_teacher_perspective" not in d
    assert ">in store<" in d and "−7" in d and "−3" in d and "no correct path" in d
    assert ">records read<" in d and "−32" in d and "−30" in d
    rest = d[d.index("<details>"):]
    assert "contaminated_ids" in rest and "fingerprint" in rest
    assert "dropped 7 question(s)" in d
    # configuration: max_steps shown, epochs marked as overridden
    c = _section(text, "config")
    assert "<th>max_steps</th><td>12</td>" in c and "5 (overridden by max_steps)" in c


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
    empty_text = write_report(empty).read_text()
    assert "<b>Not run:</b> configuration" in empty_text
    assert "Training run</dt><dd>not run" in _section(empty_text, "summary")


def test_compare_run_shows_paired_differences(tmp_path):
    """A `cotdistill compare` folder: the report adds a Comparison section after the evaluation, with the
    paired differences of compare.json (mind gains 8 of 40 questions over base on both seeds: "better")."""
    import json

    from cotdistill.compare import build_table
    from cotdistill.utils.io import atomic_write_json

    def ev(d, correct):
        d.mkdir(parents=True, exist_ok=True)
        (d / "svamp.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "correct": c}) + "\n"
                                               for i, c in enumerate(correct)))

    run = tmp_path / "cmp"
    ev(run / "eval" / "base", [1] * 10 + [0] * 30)
    cells = {"mind": []}
    for seed in (0, 1):
        d = run / f"mind-s{seed}" / "eval" / "mind"
        ev(d, [1] * 18 + [0] * 22)
        cells["mind"].append(d)
    atomic_write_json(run / "compare.json", build_table(run, cells, ["svamp"], n_boot=300))
    text = write_report(run).read_text()
    page = _parse(text)
    assert page.sections.index("compare") == page.sections.index("eval") + 1
    c = _section(text, "compare")
    assert "Paired differences" in c and "+20.0" in c and "s0: 0.008 (8:0), s1: 0.008 (8:0)" in c
    assert "<td class='up'>better</td>" in c and "&#x27;std_cot&#x27; is not in this table" in c
    # an older compare.json without paired statistics still renders, with a notice
    old = json.loads((run / "compare.json").read_text())
    old.pop("paired")
    (run / "compare.json").write_text(json.dumps(old))
    assert "<b>Not run:</b> paired differences" in _section(write_report(run).read_text(), "compare")
    # a plain run folder has no Comparison section
    assert "compare" not in _parse(write_report(tmp_path / "cmp" / "mind-s0").read_text()).sections


def test_probe_compare_shows_nll_and_weight_sections(tmp_path):
    """A probe run's compare.json (the committed 3-seed probe export): the report adds the held-out NLL table,
    the weight share on injected paths with its trajectory plot, and the per-source weight table."""
    import json

    src = Path(__file__).resolve().parents[2] / "results" / "probe_compat_cpu"
    table = json.loads((src / "compare.json").read_text())
    run = tmp_path / "probe"
    run.mkdir()
    (run / "compare.json").write_text(json.dumps(table))
    shutil.copy(src / "injected_share.png", run / "injected_share.png")
    c = _section(write_report(run).read_text(), "compare")
    assert "Held-out rationale NLL on <code>eit:svamp</code>" in c
    mind = table["rationale_nll"]["paired"]["std_cot_all"]["mind"]
    assert f"{mind['delta']:+.4f}" in c and "Teacher-compatibility probe" in c
    assert c.count("<img") == 1 and "Where the weight went, per source" in c
    share = table["probe"]["rows"]["mind"]["by_source"]["gemini-1.5-flash"]["share"]
    assert f"<td class='num'>{share:.3f} <span class='ci'>CE " in c
    (run / "injected_share.png").unlink()  # a missing plot leaves the tables
    assert "<img" not in _section(write_report(run).read_text(), "compare")


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
    assert dom.sections[0] == "summary" and len(dom.sections) == 9
    assert len(_decode_pngs(dom.imgs)) >= 6
    shutil.copy(shot, full_run / "report_screenshot.png")  # kept next to the report for a human look


def test_summary_card_leads_with_heldout_nll_and_answer_format(tmp_path):
    """Issue 14: the first screen says whether anything was learned: paired held-out NLL and answer format,
    and the accuracy difference with a paired test."""
    import json

    from cotdistill.config import Config, dump_config
    from cotdistill.utils.io import atomic_write_text

    run = make_run(tmp_path / "lead", "x", card=False)
    cfg = Config.model_validate({"run": {"name": "lead"}, "method": "mind", "eval": {"benchmarks": ["svamp"]}})
    atomic_write_text(run / "config.yaml", dump_config(cfg))
    ids = [f"q{i}" for i in range(40)]
    for tag, shift in (("base", 0.0), ("mind", -0.5)):
        d = run / "nll" / tag
        d.mkdir(parents=True)
        (d / "rationale_nll-eit-svamp.summary.json").write_text(json.dumps({"set": "eit:svamp"}))
        (d / "rationale_nll-eit-svamp.jsonl").write_text("".join(
            json.dumps({"id": i, "nll": 2.0 + 0.01 * k + shift}) + "\n" for k, i in enumerate(ids)))
        (run / "eval" / tag).mkdir(parents=True, exist_ok=True)
        rows = [{"id": i, "correct": (k < 2) if tag == "base" else (k < 12),
                 "output": "blah blah" if tag == "base" and k % 2 else "5 - 2 = 3.\nThe answer is: 3"}
                for k, i in enumerate(ids)]
        (run / "eval" / tag / "svamp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = _section(write_report(run).read_text(encoding="utf-8"), "summary")
    lead = s[s.index("Did distillation work?"):s.index("<dl class='facts'>")]
    assert "base 2.195 → student 1.695" in lead and "paired Δ <b>-0.500</b> [-0.500, -0.500]" in lead
    assert "lower: the student models held-out teacher reasoning better" in lead
    assert "Answer format</b> on svamp: base 50.0% → student 100.0%" in lead
    assert "paired McNemar p=" in s and "(10:0 flips)" in s

