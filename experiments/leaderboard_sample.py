"""The committed `vprlab leaderboard` sample (docs/examples/leaderboard/): random stand-ins of a few cheap
published families on the small real-image sets of ../shared/data/real, with a model that has no
stand-in (NetVLAD's MATLAB file) and a benchmark that is not here (Pitts30k) to show how skips are
listed. Runs the command in this process and writes README.md beside its output: the exact command,
the wall time, the CPU (lscpu) and the torch thread count.

    python experiments/leaderboard_sample.py                      # docs/examples/leaderboard/
    python experiments/leaderboard_sample.py --models cosplace_resnet18_512 anyloc_...   # other registry names

Nordland 64x32 is evaluated at its stored 32x64 for every model (`benchmark.real_nordland64.image_size`:
3,576 + 3,576 images at each method's own size would take hours on a CPU); Corridor and Gardens Point use
each method's own preprocessing. A model the registry does not hold is left out with a line on stderr, so
the script runs with whatever families the registry has. The numbers mean nothing (random weights).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ["cosplace_resnet18_512", "cosplace_resnet50_2048", "eigenplaces_resnet18_512", "mixvpr_resnet50_512",
          "convap_resnet50_2048", "boq_resnet50_16384", "salad_dinov2_8448", "netvlad_vgg16_pitts30k",
          "eigenplaces_indoor_resnet50_2048", "apgem_resnet101_2048", "dinomix_dinov2_4096"]
BENCHMARKS = ["real_nordland64", "real_corridor", "real_gardenspoint", "pitts30k_test"]
OVERRIDES = ["device=cpu", "num_workers=0", "batch_size=32", "progress=false", "benchmark.real_nordland64.image_size=[32,64]"]


def cpu_description() -> str:
    """lscpu's model name, core count and the SIMD flags that matter for torch (or 'unknown')."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = [f for f in fields.get("Flags", "").split() if f in ("avx", "avx2", "avx512f", "avx512_bf16", "amx_tile", "fma")]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, flags {' '.join(flags) or 'none of avx/avx2/avx512f/fma'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "examples" / "leaderboard")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/vprlab_leaderboard_sample_cache"),
                        help="descriptor cache (a rerun reads every descriptor from it)")
    parser.add_argument("--models", nargs="+", default=MODELS, help="published names to stand in for")
    args = parser.parse_args(argv)

    import torch

    from vprlab.commands.cli import main as vprlab
    from vprlab.pretrained.catalog import is_published

    models = [m for m in args.models if is_published(m)]
    for name in sorted(set(args.models) - set(models)):
        print(f"leaderboard_sample: {name} is not in this registry; left out", file=sys.stderr)
    out = args.out.resolve()
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    command = ["leaderboard", "--stand-ins", "--models", *models, "--benchmarks", *BENCHMARKS,
               "--cache", str(args.cache), "--out", str(shown), "--override", *OVERRIDES]
    cached_before = sum(1 for f in args.cache.rglob("*") if f.is_file()) if args.cache.is_dir() else 0
    start = time.perf_counter()
    status = vprlab(command)
    seconds = time.perf_counter() - start
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())  # 1 / 5 / 15 minutes, at the end of the run
    cache_state = ("descriptor cache empty at the start" if not cached_before else
                   f"descriptor cache already holding {cached_before} files from earlier runs (their cells were read, not extracted)")
    quoted = " ".join(["vprlab", *command]).replace("image_size=[32,64]", "image_size='[32,64]'")
    readme = f"""# Sample `vprlab leaderboard` output

Made offline by `python experiments/leaderboard_sample.py` on {datetime.date.today().isoformat()}, i.e.

```bash
{quoted}
```

**Every model here holds random stand-in weights, not the published model** (`--stand-ins`: a seeded
random file in each release's own layout and container, loaded strictly like the real file, evaluated
with the method's own preprocessing), so the recalls mean nothing and are never compared with published
numbers (Δ: n/a). With the real files in the torch hub cache (`vprlab models download NAME`) or a
`--weights-dir`, `vprlab leaderboard --data-dir <data>` without `--stand-ins` ranks every published model
on every benchmark that is here.

- Benchmarks: the small real-image sets of `../shared/data/real` (Nordland 64x32 winter vs summer, every
  10th frame; VPR-Bench Corridor; 10 Gardens Point frames). Nordland is evaluated at its stored 32x64 for
  every model (each method's own size would take hours on a CPU), so MixVPR (built for 320x320), Conv-AP
  (its 2x2 cells need a larger feature map) and SALAD (DINOv2, patch 14) refuse it: those cells are listed
  as skipped with the model's message. Corridor and Gardens Point use each method's own size.
- `netvlad_vgg16_pitts30k` and `apgem_resnet101_2048` show models without a stand-in writer (NetVLAD's
  MATLAB file, dirtorch's pickle are not written) and
  `pitts30k_test` a benchmark whose data is not here: both are listed under *Skipped*.
- Runtime: {seconds / 60:.1f} min wall (exit status {status}), {cache_state}, on
  {cpu_description()}, torch {torch.__version__} with {torch.get_num_threads()} thread(s), shared with
  other jobs (load average {load}); img/s in the table is the extraction speed of this run under that load.

Files: [leaderboard.md](leaderboard.md), [leaderboard.csv](leaderboard.csv), [leaderboard.tex](leaderboard.tex),
[R@1 vs descriptor size](leaderboard_r1_vs_dim.png), [R@1 vs img/s](leaderboard_r1_vs_speed.png).
"""
    from vprlab.utils.io import atomic_write_text

    atomic_write_text(out / "README.md", readme)
    print(f"wrote {out / 'README.md'} ({seconds:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
