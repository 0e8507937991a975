"""Train the distilled student that ``eval_vs_lmeval.py --adapter`` evaluates (a quick Std-CoT LoRA run).

    python benchmarks/make_student.py /tmp/bench-student       # -> /tmp/bench-student/student (the adapter)

Data: the first 40 MCC-KD SVAMP train questions with 2 rationales each (``_common.svamp_path_rows``, the final
answer line stripped as ``cotdistill curate`` does), saved as a path dataset; then ``cotdistill train
benchmarks/configs/student_std_cot.yaml`` on it (40 steps). SVAMP train does not overlap the GSM8K test questions
the benchmark evaluates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    out = Path(sys.argv[1]).resolve()
    ds = out / "dataset"
    if not (ds / "dataset_dict.json").exists():
        C.save_path_dataset(C.svamp_path_rows(40, 2), ds)
    cfg = C.ROOT / "benchmarks" / "configs" / "student_std_cot.yaml"
    subprocess.run([sys.executable, "-m", "cotdistill", "train", str(cfg), "--dataset", str(ds), "--run-dir", str(out)],
                   check=True, cwd=C.ROOT)
    print(f"student adapter: {out / 'student'}")


if __name__ == "__main__":
    main()
