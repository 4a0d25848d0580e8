"""Search a classification loss on the built-in digits (or your ImageFolder), AutoLoss-Zero style.

    python runs/search_classification.py --out out/search_classification
    python runs/search_classification.py --data path/to/images --evaluations 500 --out out/mine
    python -m scoop -n 4 runs/search_classification.py --out out/scoop     # parallel, or multi-host
    python runs/search_classification.py --resume out/search_classification  # after an interruption
    python runs/search_classification.py --device cuda --workers-per-gpu 4 --out out/gpu  # 4 proxies per GPU

Ends by printing the best formulas and their test accuracy (mean of 3
retraining seeds) beside cross-entropy. The run directory holds the
hall of fame as PyTorch code (hall_of_fame.py), the logbook, every
evaluation, a fitness plot and the checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.evolution.config import SearchConfig  # noqa: E402
from gp_loss.evolution.script import main, run_script  # noqa: E402

# The default search: CSE-Autoloss operators for a `cls` branch, AutoLoss-Zero's loop,
# 200 proxy trainings of 5 epochs on digits; fits in a few minutes on 2 CPU cores.
DEFAULTS = SearchConfig(task="classification", scheme="zero", branches={"cls": "cls"},
                        max_evaluations=200, offspring_per_generation=20)

TASK_FLAGS = {
    "--data": ("data", str, "'digits' (built in) or an ImageFolder directory (one sub-folder per class)"),
    "--image-size": ("image_size", int, "ImageFolder images are resized to this square"),
    "--proxy-epochs": ("proxy_epochs", int, "epochs of proxy training (fitness = validation accuracy)"),
    "--final-epochs": ("final_epochs", int, "epochs of the final retraining (reported: test accuracy)"),
    "--precision": ("precision", str, "fp32 (default) or bf16 (forward pass and loss under bf16 autocast)"),
    "--optimizer": ("optimizer", str, "adam (default) or sgd (plain) for proxy and final training"),
    "--lr": ("lr", float, "learning rate (default 3e-3)"),
}

if __name__ == "__main__":
    # Exit 2 on a user error and non-zero on a crash, serially, with multiprocessing and under SCOOP.
    run_script(lambda: main(__doc__, DEFAULTS, "out/search_classification", TASK_FLAGS))
