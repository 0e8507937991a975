"""Client overhead of ``cotdistill synthesize`` (openai backend) vs raw concurrent httpx requests.

    python benchmarks/synthesis_overhead.py --quick
    python benchmarks/synthesis_overhead.py --latency-ms 50     # a server that takes 50 ms per reply

One local OpenAI-compatible server (``cotdistill.utils.openai_server.start_server`` with a scripted responder that
answers instantly, or after ``--latency-ms``) runs in its own process on 127.0.0.1. Against it, each in a fresh
process, with the same ``R`` requests (the exact payloads ``cotdistill synthesize`` plans: SVAMP train questions ×
the 8 MIND perspectives + the standard path) and the same concurrency ``C``:

* ``cotdistill``: ``cotdistill.teachers.synthesize.synthesize`` (plan, key-checked resumable store, answer scoring,
  JSONL appends, provenance) — the whole call.
* ``httpx_threads``: a ``ThreadPoolExecutor`` of ``C`` threads sharing one ``httpx.Client`` (the same transport
  our backend uses), POST + JSON parse, nothing else.
* ``httpx_async``: ``httpx.AsyncClient`` with a semaphore of ``C``, POST + JSON parse.

Overhead = cotdistill wall ÷ the faster raw client's wall − 1 (goal ≤ 5 %). With an instant server this is the
worst case: every millisecond of client-side work shows; with realistic latency it shrinks.

Module imports are outside every variant's clock (the raw clients import httpx and build their client before it
starts; the cotdistill worker imports the modules ``synthesize`` would import lazily — data loaders, answer
parser, backend, httpcore, yaml — before it starts). Their time is reported as "imports s (excluded)":
it is a once-per-process cost, and large here only when bytecode caching is off (``PYTHONDONTWRITEBYTECODE``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ANSWER = "Let me compute step by step.\nFirst, 15 + 18 = 33.\nThen 67 - 35 = 32.\nThe answer is: 32"
PERSPECTIVES = ["formal_symbolic", "intuitive", "decomposition", "planning", "analogy", "socratic", "contrastive",
                "counterfactual"]


def serve(latency_ms: float) -> None:
    """Run the scripted server until stdin closes; print its URL first."""
    from cotdistill.utils.openai_server import start_server

    def responder(messages, params):
        if latency_ms > 0:
            time.sleep(latency_ms / 1000)
        return ANSWER

    with start_server(responder, host="127.0.0.1", port=0, model_name="bench-teacher") as h:
        print(h.url, flush=True)
        sys.stdin.read()


def _config(spec: dict):
    from cotdistill.config import Config

    return Config.model_validate({
        "run": {"name": "bench_synth", "output_dir": spec["tmp"], "seed": 0},
        "data": {"question_pool": ["svamp:train"], "max_questions": spec["questions"],
                 "perspectives": PERSPECTIVES, "standard_path": "plain"},
        "teachers": [{"name": "bench", "backend": "openai", "model": "bench-teacher", "base_url": spec["url"],
                      "api_key_env": "COTDISTILL_BENCH_KEY", "max_concurrency": spec["concurrency"],
                      "max_new_tokens": 256, "timeout_s": 60, "max_retries": 2}],
    })


def _payloads(spec: dict) -> list[dict]:
    from cotdistill.teachers.synthesize import plan

    return [{"model": "bench-teacher", "messages": it.request.messages, "temperature": it.request.temperature,
             "top_p": it.request.top_p, "max_tokens": it.request.max_new_tokens, "seed": it.request.seed}
            for it in plan(_config(spec))]


def worker(name: str, spec: dict, out: str) -> None:
    import os

    import httpx

    os.environ["COTDISTILL_BENCH_KEY"] = "bench-not-a-secret"
    url = spec["url"]
    conc = spec["concurrency"]
    headers = {"Authorization": "Bearer bench-not-a-secret"}
    res: dict = {"variant": name}
    if name == "cotdistill":
        t_imp = time.perf_counter()
        import httpcore  # noqa: F401 - what httpx.Client() imports; the raw clients import it before their clock
        import yaml  # noqa: F401

        import cotdistill.data.answers  # noqa: F401 - imported lazily by synthesize
        import cotdistill.data.registry  # noqa: F401
        import cotdistill.teachers.backends.openai_backend  # noqa: F401 - with the openai SDK it wraps
        from cotdistill.teachers.synthesize import synthesize

        res["imports_s"] = round(time.perf_counter() - t_imp, 3)
        cfg = _config(spec)
        run_dir = Path(spec["tmp"]) / f"synth-{time.time_ns()}"
        t0, c0 = time.perf_counter(), time.process_time()
        summ = synthesize(cfg, run_dir, progress=False)
        res["seconds"] = time.perf_counter() - t0
        res["cpu_s"] = round(time.process_time() - c0, 3)
        res["setup_s"] = round(res["seconds"] - summ["elapsed_s"], 3)  # plan, decontamination, store, config
        res["requests"] = summ.get("sent", summ.get("done"))
        res["ok"] = summ.get("done")
        res["failed"] = summ.get("failed")
    else:
        payloads = _payloads(spec)
        res["requests"] = len(payloads)
        if name == "httpx_threads":
            from concurrent.futures import ThreadPoolExecutor

            client = httpx.Client(headers=headers, timeout=60,
                                  limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc))

            def one(p):
                r = client.post(f"{url}/chat/completions", json=p)
                r.raise_for_status()
                return r.json()["choices"][0]["message"]["content"]

            t0, c0 = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(conc) as ex:
                texts = list(ex.map(one, payloads))
            res["seconds"] = time.perf_counter() - t0
            res["cpu_s"] = round(time.process_time() - c0, 3)
            client.close()
        else:
            import asyncio

            async def run() -> list[str]:
                sem = asyncio.Semaphore(conc)
                async with httpx.AsyncClient(headers=headers, timeout=60, limits=httpx.Limits(
                        max_connections=conc, max_keepalive_connections=conc)) as client:
                    async def one(p):
                        async with sem:
                            r = await client.post(f"{url}/chat/completions", json=p)
                            r.raise_for_status()
                            return r.json()["choices"][0]["message"]["content"]

                    return await asyncio.gather(*(one(p) for p in payloads))

            t0, c0 = time.perf_counter(), time.process_time()
            texts = asyncio.run(run())
            res["seconds"] = time.perf_counter() - t0
            res["cpu_s"] = round(time.process_time() - c0, 3)
        res["ok"] = sum(t == ANSWER for t in texts)
        res["failed"] = len(texts) - res["ok"]
    res["seconds"] = round(res["seconds"], 3)
    res["requests_per_s"] = round(res["requests"] / res["seconds"], 1) if res.get("requests") else None
    C.write_worker_result(out, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--questions", type=int, default=None, help="SVAMP questions (x9 requests each)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="server-side delay per reply")
    ap.add_argument("--repeat", type=int, default=None, help="interleaved rounds (default 2 quick, 3 full)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.latency_ms)
        return
    if a.worker:
        worker(a.worker, json.loads(a.spec), a.out)
        return
    info0 = C.machine_info()
    print(json.dumps(info0, indent=1))
    q = a.questions or (30 if a.quick else 100)
    variants = ["cotdistill", "httpx_threads", "httpx_async"]
    runs: dict[str, list[dict]] = {}
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--latency-ms", str(a.latency_ms)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=C.ROOT)
    try:
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1"):
            raise SystemExit(f"server did not start: {url!r}")
        with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
            spec = {"tmp": tmp, "url": url, "questions": q, "concurrency": a.concurrency}
            for rnd in range(a.repeat or (2 if a.quick else 3)):
                for v in variants:
                    print(f"--- round {rnd + 1}: {v} ...", flush=True)
                    load0 = [round(x, 2) for x in os.getloadavg()]
                    try:
                        r = C.run_worker(__file__, v, spec)
                    except Exception as e:  # noqa: BLE001
                        print(f"{v} FAILED: {e}")
                        r = {"variant": v, "error": str(e).splitlines()[0][:300]}
                    r["loadavg_start"] = load0
                    print(json.dumps(r), flush=True)
                    runs.setdefault(v, []).append(r)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    info1 = C.machine_info()
    results = {v: C.median_run(rs, "requests_per_s") for v, rs in runs.items()}
    rows = []
    for v, r in results.items():
        if "error" in r:
            rows.append([v, "failed: " + r["error"], "", "", "", "", "", "", "", ""])
            continue
        allv = r.get("all_requests_per_s", [])
        rows.append([v, r["requests"], r["ok"], r["seconds"], r["requests_per_s"],
                     ", ".join(map(str, allv)), r.get("setup_s", ""), r.get("cpu_s", ""), r.get("imports_s", ""),
                     r["peak_rss_mib"]])
    body = (f"Synthesis client overhead: {q} SVAMP questions × 9 prompts = {9 * q} requests, concurrency "
            f"{a.concurrency}, local scripted server on 127.0.0.1 (its own process, reply latency "
            f"{a.latency_ms:g} ms). Median of the interleaved rounds.\n\n"
            + C.md_table(["client", "requests", "ok", "wall s", "requests/s (median)", "requests/s (all rounds)",
                          "of which plan + setup s", "client CPU s", "imports s (excluded)", "peak RSS MiB"],
                         rows))
    ours = results.get("cotdistill", {})
    raws = [r for k, r in results.items() if k != "cotdistill" and "error" not in r]
    if "error" not in ours and raws:
        best = max(raws, key=lambda r: r["requests_per_s"])
        over = best["requests_per_s"] / ours["requests_per_s"] - 1
        body += (f"\n\n**cotdistill overhead vs the faster raw client ({best['variant']}): {over:+.1%}** "
                 f"(goal ≤ +5 %).")
        if ours.get("setup_s") is not None:
            # the part of our wall spent before the first request and after the last one (planning with the
            # decontamination guard, config and store bookkeeping), which the raw clients do not do
            req_over = (ours["seconds"] - ours["setup_s"]) / best["seconds"] - 1
            body += (f" Of our {ours['seconds']:.3f} s, {ours['setup_s']:.3f} s are planning and setup (question "
                     f"pool + decontamination guard, keys, config, store); the request phase alone is "
                     f"{req_over:+.1%} vs the raw client's whole run.")
        allo = [o / t - 1 for o, t in zip(
            [r["seconds"] for r in runs.get("cotdistill", []) if "error" not in r],
            [r["seconds"] for r in runs.get(best["variant"], []) if "error" not in r])]
        if len(allo) > 1:
            body += (" Per-round overhead (cotdistill round i vs the same raw client's round i): "
                     + ", ".join(f"{x:+.1%}" for x in allo) + ".")
    print(body)
    # result file for make_results.py: per round, our wall ÷ the faster raw client's wall in that round - 1
    per_round = []
    for i in range(len(runs.get("cotdistill", []))):
        o = runs["cotdistill"][i]
        raw = [runs[v][i] for v in variants[1:] if "error" not in runs[v][i]]
        if "error" not in o and raw:
            per_round.append(o["seconds"] / min(r["seconds"] for r in raw) - 1)
    rounds = [{"round": i + 1, "variants": {v: {**runs[v][i], "loadavg_start": runs[v][i].get("loadavg_start")}
                                            for v in variants}} for i in range(len(runs.get("cotdistill", [])))]
    C.save_result("synthesis_overhead", f"{9 * q}req-{a.latency_ms:g}ms", {
        "date_utc": info0["date_utc"], "machine": info0, "machine_after": info1,
        "settings": {"questions": q, "requests": 9 * q, "concurrency": a.concurrency, "latency_ms": a.latency_ms,
                     "rounds": len(rounds), "variants": variants},
        "rounds": rounds, "summary": {"overhead": C.spread(per_round), "body_md": body},
    })


if __name__ == "__main__":
    main()
