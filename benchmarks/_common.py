"""Shared helpers for the hand-run benchmarks: machine info, worker subprocesses, RESULTS.md sections, test data.

Each benchmark runs every measured variant in its own fresh subprocess (``--worker NAME``), so peak RSS
(``ru_maxrss``) belongs to that variant alone and no variant warms caches for the next one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"  # one small JSON per run; RESULTS.md's tables are made from them
SVAMP_MCC_KD = Path("/work/shared/data/teacher_rationales_mcc_kd/data/SVAMP/train.json")


def data_file(rel: str) -> Path:
    """A file under the shared data folder (``COTDISTILL_DATA_DIR`` or the default)."""
    from cotdistill.utils.paths import data_dir

    return Path(data_dir()) / rel


def machine_info() -> dict:
    """CPU model, cores, torch threads, load average, RAM, library versions."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                          if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    versions = {}
    for name in ("cotdistill", "torch", "transformers", "peft", "trl", "lm_eval", "httpx", "openai"):
        try:
            mod = __import__(name)
            versions[name] = getattr(mod, "__version__", "?")
        except Exception:  # noqa: BLE001 - optional tools may be missing
            pass
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: str, name: str, spec: dict, timeout: float = 3600) -> dict:
    """Run ``python SCRIPT --worker NAME --spec JSON`` in a fresh process; return the JSON it wrote."""
    out = Path(spec["tmp"]) / f"result-{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, script, "--worker", name, "--spec", json.dumps(spec), "--out", str(out)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]).strip()
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
        raise RuntimeError(f"worker {name} failed (rc {proc.returncode}): {last}\n{tail}")
    res = json.loads(out.read_text())
    res["process_seconds"] = round(time.time() - t0, 1)
    return res


def parse_or_work(ap, worker):
    """Parse the command line of a benchmark script; in a worker process (``--worker NAME --spec JSON --out F``,
    as :func:`run_worker` starts it) run ``worker(NAME, spec, F)`` instead and return None."""
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, json.loads(a.spec), a.out)
        return None
    return a


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (one thread: about the wall time on an idle core)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def write_worker_result(path: str, result: dict) -> None:
    """Add peak RSS, CPU time and the load average at the end, and write the worker's result JSON."""
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    result["process_cpu_seconds"] = round(cpu_seconds(), 1)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(path).write_text(json.dumps(result, indent=1))


def spread(values: list[float]) -> dict:
    """Median, min, max and every value (rounded) of a list of per-round figures."""
    v = sorted(values)
    if not v:
        return {"median": None, "min": None, "max": None, "values": []}
    mid = len(v) // 2
    med = v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
    return {"median": round(med, 4), "min": round(v[0], 4), "max": round(v[-1], 4),
            "values": [round(x, 4) for x in values]}


def git_commit() -> str | None:
    """The commit the measured code came from (``BENCH_GIT_COMMIT`` for a copy outside git), else None."""
    if os.environ.get("BENCH_GIT_COMMIT"):
        return os.environ["BENCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_result(kind: str, label: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<kind>-<label>-<UTC stamp>.json`` (sorted keys, small) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS_DIR / f"{kind}-{label}-{stamp}.json"
    payload = {"benchmark": kind, "label": label, "command": command_line(), "git_commit": git_commit(), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def command_line() -> str:
    """The exact command that ran this benchmark, relative to the repository root."""
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
    except ValueError:
        pass
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ)
    return (env + " " if env else "") + "python " + " ".join(shlex.quote(a) for a in argv)


def append_results(title: str, info_before: dict, info_after: dict, body_md: str) -> None:
    """Append a dated section to ``benchmarks/RESULTS.md``."""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by a script in `benchmarks/` "
                           "(run by hand); newest last. Ratios are measured in one run on one machine.\n")
    v = info_before["versions"]
    lines = [
        "",
        f"## {title} — {info_before['date_utc']}",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {info_before['cpu']}, {info_before['cores']} cores, torch threads {info_before['torch_threads']}, "
        f"{info_before['ram_gib']} GiB RAM; load average (1/5/15 min) before {info_before['loadavg']}, "
        f"after {info_after['loadavg']} (the machine is shared, so absolute numbers move with the load).",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        body_md.rstrip(),
        "",
    ]
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"appended to {RESULTS}")


def md_table(headers: list[str], rows: list[list]) -> str:
    """A small Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def svamp_path_rows(n_questions: int, k_paths: int, offset: int = 0) -> list[dict]:
    """Path-dataset rows (curate layout, see INTERFACES.md) from the MCC-KD SVAMP rationales.

    Paths are the first ``k_paths`` sampled rationales of each question (labels ``sample0..``), with their final
    answer line removed as `cotdistill curate` does. Each path is its own teacher and perspective (role
    ``perspective:sample<j>``), so that every method selects all K paths (pathset/roles.py: MIND the perspective
    paths, COMPACT one per teacher, MCC-KD the multi-path set, Std-CoT ``paths: all``): overheads at equal paths.
    """
    from cotdistill.data.answers import strip_final_answer_line

    src = SVAMP_MCC_KD if SVAMP_MCC_KD.is_file() else data_file("teacher_rationales_mcc_kd/data/SVAMP/train.json")
    items = json.loads(src.read_text())
    rows = []
    for i, it in enumerate(items[offset:]):
        outs = [o for o in it["output"] if isinstance(o, str) and o.strip()]
        if len(outs) < k_paths:
            continue
        paths = [{"teacher": f"gpt-3.5-turbo-{j}", "perspective": f"sample{j}", "label": f"sample{j}",
                  "role": f"perspective:sample{j}",
                  "text": strip_final_answer_line(o).strip(), "record_key": f"svamp-{offset + i}-{j}"}
                 for j, o in enumerate(outs[:k_paths])]
        rows.append({"question_id": f"svamp-train-{offset + i}", "question": it["instruction"].strip(),
                     "gold": str(it["label"]).strip(), "kind": "number", "source": "svamp:train",
                     "difficulty": None, "paths": paths})
        if len(rows) == n_questions:
            break
    return rows


def save_path_dataset(rows: list[dict], out_dir: Path) -> Path:
    """Save rows as a curated path dataset folder (DatasetDict with a ``train`` split + a minimal data card)."""
    from datasets import Dataset, DatasetDict

    out_dir = Path(out_dir)
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(out_dir))
    (out_dir / "data_card.json").write_text(json.dumps({"source": "benchmarks (MCC-KD SVAMP rationales)",
                                                        "splits": {"train": len(rows)}}))
    return out_dir


def median_run(runs: list[dict], key: str) -> dict:
    """The run with the median ``key`` among successful runs (the first error if all failed), plus ``all_<key>``."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r[key])
    if not ok:
        return runs[0]
    med = dict(ok[(len(ok) - 1) // 2])
    med[f"all_{key}"] = [r[key] for r in runs if "error" not in r]
    return med


def run_rounds(script: str, variants: list[str], spec: dict, rounds: int) -> dict[str, list[dict]]:
    """Run every variant's worker ``rounds`` times (interleaved: round 1 runs every variant, then round 2, ...;
    the order rotates by one each round so that no variant always runs first), each in a fresh process; a
    failing variant is recorded, not fatal. Each result carries ``round`` and the load average at its start."""
    runs: dict[str, list[dict]] = {}
    for rnd in range(rounds):
        order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
        for v in order:
            print(f"--- round {rnd + 1}: {v} ...", flush=True)
            load0 = [round(x, 2) for x in os.getloadavg()]
            try:
                r = run_worker(script, v, spec)
            except Exception as e:  # noqa: BLE001
                print(f"{v} FAILED: {e}")
                r = {"variant": v, "error": str(e).splitlines()[0][:200]}
            r["round"], r["loadavg_start"] = rnd + 1, load0
            print(json.dumps({k: x for k, x in r.items() if k != "samples"}), flush=True)
            runs.setdefault(v, []).append(r)
    return runs
