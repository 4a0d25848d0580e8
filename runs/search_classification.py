"""Search a classification loss on the built-in digits (or your ImageFolder), AutoLoss-Zero style.

    python runs/search_classification.py --out out/search_classification
    python runs/search_classification.py --data path/to/images --evaluations 500 --out out/mine
    python runs/search_classification.py --map ray --workers 4 --out out/ray  # parallel on Ray
    python runs/search_classification.py --ray-address node1:6379 --out out/cluster  # a Ray cluster
    python -m scoop -n 4 runs/search_classification.py --out out/scoop     # parallel, or multi-host
    python runs/search_classification.py --resume out/search_classification  # after an interruption
    python runs/search_classification.py --device cuda --workers-per-gpu 4 --out out/gpu  # 4 proxies per GPU
    python runs/search_classification.py --data train/ --val-data val/ --test-data test/ --label-noise 0.4 \
        --out out/noisy                                                     # your splits, noisy labels

Ends by printing the best formulas and the baselines retrained on 5 paired seeds
(test accuracy), each with its difference from cross-entropy, the 95% interval of
that difference and a verdict. The run directory holds the hall of fame as PyTorch
code (hall_of_fame.py), the logbook, every evaluation, a fitness plot and the checkpoint.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.evolution.config import SearchConfig  # noqa: E402
from gp_loss.evolution.script import main, run_script  # noqa: E402

# The default search: CSE-Autoloss operators for a `cls` branch, AutoLoss-Zero's loop from the
# baselines and random genomes, successive halving over 1/9, 1/3 and all of a 5-epoch proxy, a
# budget of 200 full proxies; fits in a few minutes on 2 CPU cores (README, "Measured").
DEFAULTS = SearchConfig(task="classification", scheme="zero", branches={"cls": "cls"},
                        max_evaluations=200, offspring_per_generation=20, warm_start="baselines",
                        fidelities=[1 / 9, 1 / 3, 1.0], baselines=["ce", "focal", "label_smoothing_ce", "gce"])


def defaults(given: dict) -> SearchConfig:
    """DEFAULTS, with the label noise drawn from the run's seed (recorded in config.json as noise_seed)."""
    return replace(DEFAULTS, task_options={**DEFAULTS.task_options, "noise_seed": given.get("seed", 0)})


TASK_FLAGS = {
    "--data": ("data", str, "'digits' (built in) or an ImageFolder directory (one sub-folder per class)"),
    "--image-size": ("image_size", int, "ImageFolder images are resized to this square"),
    "--proxy-epochs": ("proxy_epochs", int, "epochs of proxy training (fitness = validation accuracy)"),
    "--final-epochs": ("final_epochs", int, "epochs of the final retraining (reported: test accuracy)"),
    "--precision": ("precision", str, "fp32 (default) or bf16 (forward pass and loss under bf16 autocast)"),
    "--optimizer": ("optimizer", str, "adam (default) or sgd (plain) for proxy and final training"),
    "--lr": ("lr", float, "learning rate (default 3e-3)"),
    "--val-data": ("val_data", str, "ImageFolder root for validation (default: a split of --data); its class "
                                    "folders must match --data's"),
    "--test-data": ("test_data", str, "ImageFolder root for test (default: a split of --data); its class "
                                      "folders must match --data's"),
    "--label-noise": ("label_noise", float, "fraction of training labels flipped uniformly to another class, "
                                            "drawn from the run's --seed, recorded in config.json (default 0)"),
}

if __name__ == "__main__":
    # Exit 2 on a user error and non-zero on a crash, serially, with multiprocessing and under SCOOP.
    run_script(lambda: main(__doc__, defaults, "out/search_classification", TASK_FLAGS))
