"""Every experiment of docs/results/, in one command.

    python -m experiments.run_all            # the committed results
    python -m experiments.run_all --quick    # toy size (CI), ROOT/results

Runs quality, mnist, recipe, class_drop, steerability, restoration and adaptive (runs are
shared and reused across them and across calls), then writes
docs/results/README.md from their numbers. Interrupted, the same command
resumes: finished runs and evaluations are read back, not redone.
"""
import json
import os
import time

from experiments import adaptive
from experiments import class_drop
from experiments import common
from experiments import mnist
from experiments import quality
from experiments import recipe
from experiments import restoration
from experiments import steerability

# The cheap ones after quality reuse its runs; recipe, the longest, last.
SCRIPTS = (("quality", quality), ("mnist", mnist),
           ("restoration", restoration),
           ("steerability", steerability), ("class_drop", class_drop),
           ("adaptive", adaptive), ("recipe", recipe))


def main(argv=None):
  scale, root, out = common.parse(argv)
  results, seconds = {}, {}
  for name, module in SCRIPTS:
    start = time.time()
    results[name] = module.run(scale, root, out)
    seconds[name] = time.time() - start
    print(f"experiments.{name}: {seconds[name]:.0f} s", flush=True)
  with open(os.path.join(out, "timing.json"), "w") as fh:
    json.dump({"scale": scale.name, "report_only": scale.report_only,
               "seconds": seconds,
               "measured_cost": common.measured_cost(root)}, fh, indent=1)
  from experiments import summary  # pylint: disable=g-import-not-at-top
  # The pages also read the results of the scripts that run on their own.
  summary.write(scale, {**summary.load(out), **results}, out)
  print(f"experiments.run_all ({scale.name}): {sum(seconds.values()):.0f} s; "
        f"results in {out}")


if __name__ == "__main__":
  main()
