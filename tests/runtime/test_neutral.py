"""The runtime is neutral: importing it loads nothing of the GP engine, so any search can use it."""
import json
import subprocess
import sys

from tests.helpers import ROOT

FORBIDDEN = ("deap", "primitives", "gp_loss.language", "gp_loss.filters", "gp_loss.evolution", "gp_loss.tasks")

PROBE = """
import importlib, json, pkgutil, sys
sys.path.insert(0, {root!r})
import gp_loss.runtime
names = sorted(m.name for m in pkgutil.iter_modules(gp_loss.runtime.__path__, "gp_loss.runtime."))
for name in names:
    importlib.import_module(name)
print(json.dumps({{"runtime": names, "loaded": sorted(sys.modules)}}))
"""


def test_importing_the_runtime_loads_no_gp_engine_module():
    proc = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT))], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"gp_loss.runtime.parallel", "gp_loss.runtime.checkpoint", "gp_loss.runtime.run_dir",
            "gp_loss.runtime.atomic", "gp_loss.runtime.threads"} <= set(report["runtime"])
    leaked = [m for m in report["loaded"] if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert leaked == []
