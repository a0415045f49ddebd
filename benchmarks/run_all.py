r"""Every benchmark in one run, written as JSON and markdown per machine.

  python -m benchmarks.run_all                    # every benchmark's defaults
  python -m benchmarks.run_all --size=small       # about 25 min on 2 CPU cores
  python -m benchmarks.run_all --quick --out=DIR  # smoke run, a few minutes
  python -m benchmarks.run_all --only=sampling,scaling
  python -m benchmarks.run_all --markdown_from=benchmarks/results/M.json

Runs transforms, step, loop, input, sampling and scaling one after the
other in this process, each through its own main(argv) (which prints what
it prints when run alone, and returns its results), then writes

  <out>/<machine>.json  machine, date, jax version, device list, size, and
                        per benchmark its argv, seconds and results (or
                        the error it raised);
  <out>/<machine>.md    a markdown table per benchmark: ratios measured side
                        by side in one run, and absolute numbers in columns
                        labelled with the machine they were measured on.

<machine> is a sanitized name of the accelerator (when not the CPU), the
CPU model and the CPU count, e.g. amd-epyc-2cpu, so runs on several
machines sit side by side in benchmarks/results/. A benchmark that fails
is recorded with its error, the others still run, and the exit status is 1.

--size picks each benchmark's arguments (SIZES): full is every benchmark's
own default; small shrinks the sampling training budget, the timing rounds
and the scaling grid to fit a shared 2-core machine; quick is every
benchmark's smoke run. quick also turns on a persistent compilation cache
(a temporary directory, unless JAX_COMPILATION_CACHE_DIR is set) shared
with the scaling subprocesses: the quick configs are chosen so that the
step, loop, sampling and scaling smoke runs compile the same train step
(digits runlocal), which the cache then compiles once. Compilation is
never inside a timed region, so the cache changes no measured number but
the compile times some benchmarks report.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = ("transforms", "step", "loop", "input", "sampling", "scaling")
# Arguments of each benchmark's main per --size.
SIZES = {
    "full": {name: [] for name in BENCHMARKS},
    "small": {
        "transforms": ["--repeats=5"],
        # DiT-mu (the runlocal backbone) compiles in seconds where the
        # digits U-Net takes a minute per transform on 2 busy cores.
        "step": ["--config=digits:runlocal", "--rounds=20"],
        "loop": ["--config=digits:runlocal", "--steps=60", "--log_every=20"],
        "input": ["--batches=10"],
        "sampling": ["--train_steps=300", "--num_samples=256", "--tols=1e-3",
                     "--repeats=1"],
        "scaling": ["--transforms=fourier", "--steps=2"],
    },
    "quick": {
        "transforms": ["--quick"],
        "input": ["--quick"],
        # identity and fourier of the digits runlocal config: the train
        # steps that loop, sampling and scaling below compile again.
        "step": ["--quick", "--config=digits:runlocal",
                 "--transforms=fourier"],
        # loop's own --quick would run 12 steps, a different program.
        "loop": ["--config=digits:runlocal", "--steps=6", "--log_every=2"],
        "sampling": ["--quick"],
        "scaling": ["--quick"],
    },
}


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "cpu"


def sanitize(text: str) -> str:
  """Lower-case letters, digits and single dashes: a file name."""
  text = re.sub(r"\((r|tm|c)\)", "", text.lower())
  # Clock speeds and the word "processor" say nothing about which machine.
  text = re.sub(r"@.*?(ghz|$)|\bprocessor\b|\b\d+-core\b", " ", text)
  return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def machine_info() -> dict:
  devices = jax.devices()
  dev = devices[0]
  cpu = _cpu_model()
  parts = [] if dev.platform == "cpu" else [
      f"{dev.device_kind}-x{len(devices)}"]
  parts += [cpu, f"{os.cpu_count()}cpu"]
  return {
      "machine": sanitize(" ".join(parts)),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "jax": jax.__version__,
      "jaxlib": getattr(__import__("jaxlib"), "__version__", None),
      "python": platform.python_version(),
      "platform": dev.platform, "device_kind": dev.device_kind,
      "devices": [str(d) for d in devices],
      "cpu": cpu, "cpu_count": os.cpu_count(),
      "host": platform.platform(),
  }


def jsonable(v):
  """Results -> JSON: tuples as lists, numpy scalars as numbers, NaN and
  inf as None (JSON has no NaN)."""
  if isinstance(v, dict):
    return {str(k): jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(x) for x in v]
  if isinstance(v, np.ndarray):
    return jsonable(v.tolist())
  if isinstance(v, (np.integer,)):
    return int(v)
  if isinstance(v, (float, np.floating)):
    v = float(v)
    return v if math.isfinite(v) else None
  return v


def _transforms_result(rows) -> list:
  out = []
  for size, name, value, err in rows:
    if name.startswith("ratio "):
      out.append({"size": list(size), "name": name, "ratio": value})
    else:
      out.append({"size": list(size), "name": name, "ms": value,
                  "max_error": err})
  return out


def run_benchmark(name: str, argv: list):
  """The benchmark's results (JSON-able), from its main(argv)."""
  # pylint: disable=g-import-not-at-top
  if name == "transforms":
    from benchmarks import transforms
    return _transforms_result(transforms.main(argv))
  if name == "step":
    from benchmarks import step
    return step.main(argv)
  if name == "loop":
    from benchmarks import loop
    return loop.main(argv)
  if name == "input":
    from benchmarks import input as input_bench
    return input_bench.main(argv)
  if name == "sampling":
    from benchmarks import sampling
    return sampling.main(argv)
  if name == "scaling":
    from benchmarks import scaling
    return scaling.main(argv)
  raise ValueError(f"unknown benchmark {name!r}; valid: {BENCHMARKS}.")


# ----------------------------------------------------------------------------
# Markdown.


def _table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  for r in rows:
    lines.append("| " + " | ".join("" if v is None else str(v) for v in r)
                 + " |")
  return "\n".join(lines)


def _f(v, digits=3):
  if v is None:
    return "n/a"
  if isinstance(v, float):
    return f"{v:.{digits}f}"
  return str(v)


def md_transforms(res, m):
  plain = [r for r in res if "ms" in r and not r["name"].startswith(
      "wavelet")]
  out = [_table(["input", "transform", f"ms ({m})", "max round-trip error"],
                [(tuple(r["size"]), r["name"], _f(r["ms"]),
                  f"{r['max_error']:.1e}" if r["max_error"] is not None
                  else "") for r in plain])]
  rows = []
  for r in res:
    if r["name"].startswith("wavelet "):
      wavelet = r["name"].split()[1]
      ratio = {x["name"].split()[1]: x["ratio"] for x in res
               if x["size"] == r["size"] and x["name"].startswith("ratio ")
               and x["name"].endswith(" " + wavelet)}
      rows.append((tuple(r["size"]), r["name"], _f(r["ms"]),
                   _f(ratio.get("pywt/ours"), 2),
                   _f(ratio.get("jaxwt/ours"), 2)))
  out.append(_table(["input", "wavelet", f"ours ms ({m})",
                     "PyWavelets / ours", "jaxwt / ours"], rows))
  return "\n\n".join(out)


def md_step(res, m):
  rows = [("identity (FM)", _f(res["identity_ms"]), "1", "1",
           _f(res["identity_path_us"], 1), "")]
  for name, r in res.items():
    if isinstance(r, dict):
      rows.append((name, _f(r["ms"]), _f(r["median_ratio"]),
                   _f(r["min_ratio"]), _f(r["path_us"], 1),
                   _f(r["path_share"], 5)))
  return (f"config {res['config']}, {res['devices']} device(s), "
          f"{res['rounds']} rounds; goal {res['goal']}\n\n" + _table(
              ["transform", f"step ms ({m})", "median ratio vs FM",
               "min ratio vs FM", f"path us ({m})", "path share of step"],
              rows))


def md_loop(res, m):
  return f"model {res['model']}, batch {res['batch']}\n\n" + _table(
      [f"bare steps/s ({m})", f"loop steps/s ({m})", "loop / bare",
       f"input wait ms ({m})", f"other overhead ms ({m})"],
      [(_f(res["bare_steps_per_s"]), _f(res["loop_steps_per_s"]),
        _f(res["loop_over_bare"]), _f(res["input_wait_ms"]),
        _f(res["other_overhead_ms"]))])


def md_input(res, m):
  return _table(["size", "storage", "batch", f"images/s ({m})",
                 f"MB/s ({m})"],
                [(r["size"], r["storage"], r["batch"],
                  _f(r["images_per_s"], 0), _f(r["mb_per_s"], 1))
                 for r in res])


def md_sampling(res, m):
  floor = res["data_floor"]
  out = [f"digits, {res['train_steps']} training steps per run, "
         f"{res['num_samples']} samples against {res['num_reference']} "
         f"eval images; data floor random_fd {_f(floor['random_fd'], 4)}, "
         f"sliced_w2 {_f(floor['sliced_w2'], 4)}"]
  base = {r["solver"]: r["samples_per_s"] for r in res["solvers"]
          if r["model"] == "fm"}
  out.append(_table(
      ["run", "solver", "setting", "NFE", f"samples/s ({m})",
       f"ms/NFE ({m})", "K-Flow/FM samples/s", "random_fd", "sliced_w2"],
      [(r["model"], r["solver"], r["setting"], r["nfe"],
        _f(r["samples_per_s"], 2), _f(r["ms_per_nfe"], 2),
        _f(r["samples_per_s"] / base[r["solver"]], 3)
        if r["model"] == "kflow" and r["solver"] in base else "",
        _f(r["random_fd"], 4), _f(r["sliced_w2"], 4))
       for r in res["solvers"]]))
  curves = res["sweep"]
  cols = [(n, s) for n in curves for s in curves[n]]
  first = curves[cols[0][0]][cols[0][1]]
  out.append(
      f"{res['sweep_solver']} on each step grid, random_fd (sliced_w2); "
      f"band times tau = {[round(t, 3) for t in res['tau']]}; energy: steps "
      f"per band ~ E_s^{res['energy_power']:g}, E = "
      f"{[round(e, 2) for e in res['band_energies']]}")
  out.append(_table(
      ["NFE"] + [f"{n}/{s}" for n, s in cols],
      [[row["nfe"]] + [
          f"{_f(curves[n][s][i]['random_fd'], 4)} "
          f"({_f(curves[n][s][i]['sliced_w2'], 4)})" for n, s in cols]
       for i, row in enumerate(first)]))
  reach = res["nfe_to_fm_quality"]
  metrics = list(reach["metrics"])
  grids = list(reach["metrics"][metrics[0]]["nfe"])
  out.append(f"NFE each grid needs to reach flow matching's quality at NFE "
             f"{reach['fm_nfe']} (within {100 * res['quality_tol']:g}%)")
  out.append(_table(
      ["grid"] + [f"NFE to FM's {m}" for m in metrics],
      [[g] + ["not reached" if reach["metrics"][m]["nfe"][g] is None
              else reach["metrics"][m]["nfe"][g] for m in metrics]
       for g in grids]))
  return "\n\n".join(out)


def md_scaling(res, m):
  base = {(r["channels"], r["size"]): r["step_ms"] for r in res["sizes"]
          if r["transform"] == "identity"}
  out = [f"{res['model_name']}, global batch {res['batch']} on 1 device; "
         "peak memory: XLA's memory analysis of the compiled step"]
  out.append(_table(
      ["transform", "input", f"step ms ({m})", "vs identity", "peak MB",
       "GFLOP"],
      [(r["transform"], f"{r['size']}x{r['size']}x{r['channels']}",
        _f(r["step_ms"], 2),
        _f(r["step_ms"] / base[(r["channels"], r["size"])])
        if (r["channels"], r["size"]) in base else "",
        _f(r["peak_mb"], 2), _f(r["gflops"], 3)) for r in res["sizes"]]))
  if res["devices"]:
    d0 = res["devices"][0]["step_ms"]
    out.append(
        f"fake CPU devices, global batch {res['batch_devices']}, "
        f"{res['device_size']}x{res['device_size']}")
    out.append(_table(
        ["devices", f"step ms ({m})", "vs 1 device", "peak MB per device"],
        [(r["devices"], _f(r["step_ms"], 2), _f(r["step_ms"] / d0),
          _f(r["peak_mb"], 2)) for r in res["devices"]]))
  out.append(_table(
      ["series", "quantity", "exponent b (y ~ x^b)", "r^2"],
      [(name, k, _f(v["exponent"]), _f(v["r2"]))
       for name, f in res["fits"].items() for k, v in f.items()]))
  return "\n\n".join(out)


MARKDOWN = {"transforms": md_transforms, "step": md_step, "loop": md_loop,
            "input": md_input, "sampling": md_sampling,
            "scaling": md_scaling}


def markdown(report: dict) -> str:
  m = report["machine"]
  lines = [f"# Benchmarks on {m}", "",
           f"{report['date']}, jax {report['jax']}, {report['platform']} "
           f"({report['device_kind']} x{len(report['devices'])}), CPU "
           f"{report['cpu']} x{report['cpu_count']}, size "
           f"`{report['size']}` (each benchmark's arguments are on its "
           "command line below; `full` runs their defaults). Absolute "
           "numbers are labelled with the machine; ratios are measured side "
           "by side in one run.", ""]
  for name, entry in report["benchmarks"].items():
    lines += [f"## {name}", "",
              f"`python -m benchmarks.{name} {' '.join(entry['argv'])}` "
              f"({entry['seconds']:.0f} s)", ""]
    if "error" in entry:
      lines += [f"failed: `{entry['error']}`", ""]
      continue
    try:
      lines += [MARKDOWN[name](entry["result"], m), ""]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
      lines += [f"(no table: {type(e).__name__}: {e})", ""]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", default="full", choices=tuple(SIZES))
  p.add_argument("--quick", action="store_true", help="--size=quick")
  p.add_argument("--out", default=os.path.join(REPO, "benchmarks",
                                               "results"))
  p.add_argument("--only", default="",
                 help="comma-separated subset of " + ",".join(BENCHMARKS))
  p.add_argument("--markdown_from", default="",
                 help="only rewrite <machine>.md beside this <machine>.json "
                 "(after a change of the tables), running nothing")
  args = p.parse_args(argv)
  if args.markdown_from:
    with open(args.markdown_from) as f:
      report = json.load(f)
    with open(os.path.splitext(args.markdown_from)[0] + ".md", "w") as f:
      f.write(markdown(report))
    return report
  size = "quick" if args.quick else args.size
  names = [n for n in BENCHMARKS
           if not args.only or n in args.only.split(",")]
  cache = None
  if size == "quick" and not jax.config.jax_compilation_cache_dir:
    cache = tempfile.mkdtemp(prefix="kflow_bench_cache_")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  report = dict(machine_info(), size=size, argv=sys.argv[1:] if argv is None
                else list(argv), benchmarks={})
  failed = []
  try:
    for name in names:
      bench_argv = SIZES[size][name]
      print(f"\n=== {name} {' '.join(bench_argv)}", flush=True)
      start = time.perf_counter()
      entry = {"argv": bench_argv}
      try:
        entry["result"] = jsonable(run_benchmark(name, list(bench_argv)))
      except Exception as e:  # pylint: disable=broad-except
        # One broken benchmark must not cost the others' results.
        traceback.print_exc()
        entry["error"] = f"{type(e).__name__}: {e}"
        failed.append(name)
      entry["seconds"] = round(time.perf_counter() - start, 1)
      report["benchmarks"][name] = entry
  finally:
    if cache:
      shutil.rmtree(cache, ignore_errors=True)
  os.makedirs(args.out, exist_ok=True)
  stem = os.path.join(args.out, report["machine"])
  with open(stem + ".json", "w") as f:
    json.dump(report, f, indent=1, allow_nan=False)
    f.write("\n")
  with open(stem + ".md", "w") as f:
    f.write(markdown(report))
  took = ", ".join(f"{n} {report['benchmarks'][n]['seconds']:.0f} s"
                   for n in names)
  print(f"\nwrote {stem}.json and {stem}.md ({took})")
  if failed:
    print(f"failed: {failed}", file=sys.stderr)
    sys.exit(1)
  return report


if __name__ == "__main__":
  main()
