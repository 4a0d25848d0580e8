"""Search Parameterized AP Loss (Tao et al., NeurIPS 2021) for a detector: the 41 values of θ
(five piecewise-linear substitutions H1, H2, I1, I2, I3 and the regression gradient scale)
that maximise the validation AP of a short proxy training, then retrain the best θ against
Focal + GIoU and PAP-Loss with identity substitutions.

    python runs/search_pap.py --out out/run   # the CPU-scale default
    python runs/search_pap.py --help          # every flag, examples, the files a run writes

The search itself is gp_loss.pap.search.main.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.pap.search import main  # noqa: E402
from gp_loss.runtime.script import run_script  # noqa: E402

if __name__ == "__main__":
    run_script(main)
