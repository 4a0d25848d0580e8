"""HPS-Det: search the number of positives per (FPN level x aspect-ratio bin) of FCOS or RetinaNet's
dynamic sample assignment, then compare it with the detector's default assignment.

    python runs/hps_det.py --out out/run   # the CPU-scale default
    python runs/hps_det.py --help          # every flag, examples, the files a run writes

The search itself is gp_loss.tasks.detection.hps_search.main.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.runtime.script import run_script  # noqa: E402
from gp_loss.tasks.detection.hps_search import main  # noqa: E402

if __name__ == "__main__":
    run_script(main)
