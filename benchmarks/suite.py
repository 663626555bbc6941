"""Every benchmark in one run, with a ceiling analysis and a markdown summary.

    python -m benchmarks all --quick                 # CPU: about 5 minutes on 2 cores
    python -m benchmarks all --out benchmarks/out/gpu --budget-s 480   # on a GPU (benchmarks/gpu.sh)

Parts, in order (`OUT/results.json` and `OUT/summary.md` are rewritten as each part finishes, so a
run stopped by a time limit keeps what it measured; a part that fails is reported and skipped):
  peak     measured matmul peak (the ceiling's denominator)
  loop     full loop per preset: env steps/s, updates/s, compile time, stage split, model FLOPs
  seeds    N = 1, 4, 8 seeds vmapped in one program
  search   simulations/s and roots/s vs batch for the Atari and DMC networks
  envs     env steps/s per backend
  flags    the Atari search under XLA flag sets for loops in CUDA graphs (accelerators only)
  launches the launch proxy per loop stage (counted on the CPU backend, in a subprocess on a GPU)
`--budget-s` skips the parts that would start after the budget is spent. `OUT/summary.md` holds
the tables and the ceiling lines, ready for `benchmarks/RESULTS.md`; `--profile` adds a
Perfetto/Chrome trace of one call of each loop stage per preset (`OUT/trace_<preset>.json.gz`).
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import jax

from benchmarks import envs as envs_bench
from benchmarks import launches as launches_bench
from benchmarks import loop as loop_bench
from benchmarks import peak as peak_bench
from benchmarks import search as search_bench
from benchmarks import seeds as seeds_bench
from benchmarks import xla_flags as flags_bench
from benchmarks.common import machine, markdown_table

# (env id, extra flags) per preset; the Atari loop on a CPU takes ~20 s per update, so the quick
# CPU suite times the small presets and leaves the reference-sized ones to the stage profile.
LOOP_RUNS = {
    "atari": ("Breakout-v5", []),
    # The Atari loop with bfloat16 activations and matmul/convolution inputs (`--network.compute-dtype`).
    "atari_bf16": ("Breakout-v5", ["--network.compute-dtype", "bfloat16"]),
    "dmc_state": ("dmc/CheetahRun", []),
    "classic": ("CartPole-v1", []),
    "control": ("dmc/CartpoleBalance", ["--preset", "control"]),
    "minatar": ("Breakout-MinAtar", []),
    # DMC from pixels: rendering on the host (envpool, Mesa's software EGL on a CPU, the driver's on a GPU).
    "dmc_image": ("pixels/CheetahRun-v1", []),
    "dmc_image_small": ("pixels/CartpoleBalance-v1", ["--preset", "dmc_image_small"]),
}


def loop_presets(quick: bool) -> list[str]:
    if jax.default_backend() != "cpu":
        return ["atari", "dmc_state", "classic", "control"]
    return ["classic"] if quick else ["classic", "control", "minatar", "dmc_state"]


class Suite:
    def __init__(self, out: str, budget_s: float | None, profile: bool = False):
        self.out = out
        self.profile = profile
        self.budget_s = budget_s
        self.start = time.perf_counter()
        self.results: dict[str, object] = {}
        self.failures: dict[str, str] = {}
        os.makedirs(out, exist_ok=True)

    def run(self, name: str, fn) -> None:
        elapsed = time.perf_counter() - self.start
        if self.budget_s is not None and elapsed > self.budget_s:
            print(f"[suite] skipping {name}: {elapsed:.0f}s spent of the {self.budget_s:.0f}s budget", flush=True)
            self.failures[name] = "skipped (time budget)"
            return
        print(f"\n[suite] {name} (t = {elapsed:.0f}s)", flush=True)
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - one failing part must not cost the others
            traceback.print_exc()
            self.failures[name] = f"{type(e).__name__}: {e}"
            return
        self.results[name] = result
        self.save()

    def save(self) -> None:
        """Rewrite OUT/results.json and OUT/summary.md with everything measured so far (few files:
        a GPU session copies back a handful)."""
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(dict(machine=machine(), results=self.results, failures=self.failures), f, indent=2, default=str)
        with open(os.path.join(self.out, "summary.md"), "w") as f:
            f.write(summary_markdown(self))


def run_loop(suite: Suite, preset: str, quick: bool) -> dict:
    env_id, flags = LOOP_RUNS[preset]
    base_preset = preset.removesuffix("_bf16")
    peak32 = next((r["tflops"] for r in suite.results.get("peak", []) if r["dtype"] == "float32"), None)
    # On an accelerator, trace the reference-sized presets only (a GPU session copies back few files).
    traced = suite.profile and (jax.default_backend() == "cpu" or base_preset in ("atari", "dmc_state", "dmc_image"))
    profile_dir = tempfile.mkdtemp(prefix=f"ezv-profile-{preset}-") if traced else None
    # Model FLOPs do not depend on the device: XLA's CPU cost analysis counts them here; on an
    # accelerator they are skipped (each count is another compile) and taken from a CPU run.
    on_cpu = jax.default_backend() == "cpu"
    row = loop_bench.measure(env_id, loop_bench.default_iterations(base_preset), 1 if quick else 2, flags,
                             with_flops=on_cpu, profile_dir=profile_dir)
    row["preset"] = preset  # the variant's name (atari_bf16), not only the config's preset
    if profile_dir:  # keep the small Chrome/Perfetto trace beside the results, not the raw XPlane dump
        for trace in glob.glob(os.path.join(profile_dir, "**", "*.trace.json.gz"), recursive=True):
            shutil.copy(trace, os.path.join(suite.out, f"trace_{preset}.json.gz"))
    print(f"  {preset}: {row['env_steps_per_s']:,.1f} env steps/s, {row['updates_per_s']:,.2f} updates/s, "
          f"compile {row['compile_s']:.1f}s; stages (ms) {row['stage_ms']}", flush=True)
    loop_bench.print_flops(row, peak32)
    return row


def run_launches(quick: bool) -> list[dict]:
    """The launch proxy: device-independent, so counted on the CPU backend (a subprocess on a GPU)."""
    presets = ["classic"] if quick else ["classic", "control", "atari", "dmc_state"]
    if jax.default_backend() == "cpu":
        return launches_bench.main(["--presets", *presets])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "launches.json")
        subprocess.run([sys.executable, "-m", "benchmarks", "launches", "--presets", *presets, "--json", out],
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), check=True)
        with open(out) as f:
            return json.load(f)["rows"]


def summary_markdown(suite: Suite) -> str:
    info = machine()
    lines = [f"**{info['date']}, {info['device']}** ({info['backend']}, {info['cpus']} CPUs, jax {info['jax']})", ""]
    peak_rows = suite.results.get("peak") or []
    peak32 = next((r["tflops"] for r in peak_rows if r["dtype"] == "float32"), None)
    if peak_rows:
        lines.append("Measured matmul peak: " + ", ".join(f"{r['dtype']} {r['tflops']:.3g} TFLOP/s" for r in peak_rows))
        lines.append("")
    loops = [v for k, v in suite.results.items() if k.startswith("loop/")]
    if loops:
        lines += ["| preset (env) | envs | batch | sims | compile (s) | env steps/s | updates/s | model TFLOP/s "
                  "| % of f32 peak | projected 100k run (h) | state (GiB) | process's device peak so far (GiB) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in loops:
            frac = f"{100 * r['achieved_tflops'] / peak32:.2g}" if peak32 and "achieved_tflops" in r else "-"
            lines.append(
                f"| {r['preset']} ({r['env_id']}) | {r['num_envs']} | {r['batch_size']} | {r['simulations']} | "
                f"{r['compile_s']:.1f} | {r['env_steps_per_s']:,.1f} | {r['updates_per_s']:,.2f} | "
                f"{r.get('achieved_tflops', float('nan')):.3g} | {frac} | {loop_bench.projected_hours(r):.2f} | "
                f"{r.get('state_gib', float('nan')):.2f} | {r.get('device_peak_gib', float('nan')):.2f} |")
        lines += ["", "| stage (ms per call) | " + " | ".join(r["preset"] for r in loops) + " |",
                  "|---|" + "---:|" * len(loops)]
        for stage in loops[0]["stage_ms"]:
            lines.append(f"| {stage} | " + " | ".join(f"{r['stage_ms'][stage]:,.2f}" for r in loops) + " |")
        lines.append("| learner alone: updates/s at this batch | " + " | ".join(
            f"{r['learner_updates_per_s']:,.1f}" for r in loops) + " |")
        lines.append("| share: reanalysis search / gradient / act | " + " | ".join(
            f"{100 * r['stage_share']['reanalysis search']:.0f}% / {100 * r['stage_share']['gradient step']:.0f}% / "
            f"{100 * r['stage_share']['act (per iteration)']:.0f}%" for r in loops) + " |")
        lines += ["", "| model GFLOP | " + " | ".join(r["preset"] for r in loops if "flops" in r) + " |",
                  "|---|" + "---:|" * sum("flops" in r for r in loops)]
        for key in ("reanalysis_encode_per_update", "reanalysis_search_per_update", "gradient_per_update", "update",
                    "act_per_iteration"):
            cells = [f"{r['flops'][key] / 1e9:,.2f}" for r in loops if "flops" in r]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
    if "seeds" in suite.results:
        lines += markdown_table(suite.results["seeds"], [
            ("seeds", "{seeds}"), ("compile (s)", "{compile_s:.1f}"), ("s per chunk", "{s_per_chunk:.3f}"),
            ("env steps/s (all seeds)", "{env_steps_per_s_total:,.0f}"),
            ("cost vs sequential runs", "{cost_vs_sequential:.2f}")], text_columns=0)
    if "search" in suite.results:
        lines += markdown_table(suite.results["search"], [
            ("search: preset", "{preset}"), ("Q norm", "{q_normalisation}"), ("batch", "{batch}"),
            ("sims", "{simulations}"), ("ms", "{ms_per_search:,.2f}"), ("roots/s", "{roots_per_s:,.0f}"),
            ("simulations/s", "{simulations_per_s:,.0f}"), ("model TFLOP/s", "{model_tflops:.3g}")], text_columns=2)
    if "envs" in suite.results:
        lines += markdown_table(suite.results["envs"], [
            ("env: backend", "{backend}"), ("id", "{env_id}"), ("N", "{num_envs}"),
            ("agent steps/s", "{agent_steps_per_s:,.0f}"), ("compile (s)", "{compile_s:.1f}")], text_columns=2)
    if "flags" in suite.results:
        lines += markdown_table([r for r in suite.results["flags"] if "error" not in r], [
            ("XLA flags", "{flags}"), ("preset", "{preset}"), ("batch", "{batch}"), ("sims", "{simulations}"),
            ("ms per search", "{ms_per_search:,.2f}"), ("compile (s)", "{compile_s:.1f}")], text_columns=2)
    if "launches" in suite.results:
        lines += markdown_table([row for r in suite.results["launches"] for row in launches_bench.rows_of(r)], [
            ("launch proxy: preset", "{preset}"), ("stage", "{stage}"), ("kernels", "{kernels:,.0f}"),
            ("host syncs", "{syncs:,.0f}")], text_columns=2)
    for name, why in suite.failures.items():
        lines.append(f"- {name}: not measured ({why.splitlines()[0][:200]})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Suite:
    parser = argparse.ArgumentParser(prog="python -m benchmarks all", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/out/suite")
    parser.add_argument("--budget-s", type=float, default=None)
    parser.add_argument("--parts", nargs="+", default=["peak", "loop", "seeds", "search", "envs"],
                        help="any of peak, loop (every preset) or loop/<preset>, seeds, search, envs, flags, launches")
    parser.add_argument("--profile", action="store_true", help="trace one call of each loop stage (OUT/profile_*)")
    args = parser.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    suite = Suite(args.out, args.budget_s, args.profile)
    print(f"[suite] {machine()}", flush=True)
    parts = []
    for part in args.parts:
        if part == "peak":
            parts.append(("peak", lambda: peak_bench.measure(args.quick)))
        elif part == "loop" or part.startswith("loop/"):
            presets = loop_presets(args.quick) if part == "loop" else [part.split("/", 1)[1]]
            for preset in presets:
                parts.append((f"loop/{preset}", functools.partial(run_loop, suite, preset, args.quick)))
        elif part == "seeds":
            counts = ["--seeds", "1", "4"] if args.quick and jax.default_backend() == "cpu" else []
            parts.append(("seeds", lambda: seeds_bench.main(["--env-id", "CartPole-v1", *counts, *quick])))
        elif part == "search":
            # On accelerators both Q normalisation rules: the tree rule's bookkeeping is launch overhead there.
            rules = ["--q-normalisations", "node", "tree"] if jax.default_backend() != "cpu" else []
            parts.append(("search", lambda: search_bench.main(quick + rules)))
        elif part == "envs":
            sizes = ["--num-envs", "64"] if jax.default_backend() != "cpu" else []
            parts.append(("envs", lambda: envs_bench.main(quick + sizes)))
        elif part == "flags":
            flag_args = ["--sets", "default", "while_graphs"]  # the unrolled set when there is time: PARTS
            if jax.default_backend() == "cpu":  # parses the flags only (the GPU ones are ignored here)
                flag_args += ["--presets", "classic", "--batches", "4"]
            parts.append(("flags", lambda: flags_bench.main(flag_args)))
        elif part == "launches":
            parts.append(("launches", lambda: run_launches(args.quick)))
        else:
            parser.error(f"unknown part {part!r}")
    # On an accelerator the reference-sized loops come first, then what a GPU session most needs.
    order = ["peak", "loop/atari", "flags", "loop/atari_bf16", "loop/dmc_state", "seeds", "search", "loop/classic",
             "loop/control", "envs", "launches", "loop/dmc_image"]
    parts.sort(key=lambda p: order.index(p[0]) if p[0] in order else len(order))
    for name, fn in parts:
        suite.run(name, fn)
    suite.save()
    print("\n" + summary_markdown(suite))
    print(f"[suite] done in {time.perf_counter() - suite.start:.0f}s; results in {args.out}", flush=True)
    return suite


if __name__ == "__main__":
    main()
