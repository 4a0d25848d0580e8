"""Search a pose-estimation loss from scratch (AutoLoss-Zero) on the built-in digit keypoints or your data.

    python runs/search_pose.py --out out/search_pose
    python runs/search_pose.py --data person_keypoints.json --model resnet50 --crop-height 256 \\
        --crop-width 192 --device cuda --out out/coco_pose                       # COCO person keypoints
    python runs/search_pose.py --data keypoints.json --oks-sigmas 0.08 --out out/mine   # any K keypoints
    python runs/search_pose.py --resume out/search_pose                          # after an interruption

AutoLoss-Zero's pose task (Li et al., CVPR 2022, Table 6), top-down as SimpleBaseline (Xiao et
al., ECCV 2018): each ground-truth box is cropped, a deconvolution head predicts K heatmaps,
and the searched ``pose`` branch (kind ``heat``: AutoLoss-Zero's operators) is a loss of the
predicted heatmaps ``yhat``, the Gaussian target heatmaps ``y`` and the keypoints' visibility
weights ``w`` (each N×K×H×W); its candidates are filtered on heatmap regression probes. Fitness: OKS AP
(pycocotools) on the validation instances' ground-truth boxes after a short proxy training.
Ends by printing the best losses and the heatmap MSE baseline retrained for the final schedule
with every metric (AP, AP50, AP75, AR, ...); the run directory holds them as PyTorch code
(``hall_of_fame.py``: ``pose(yhat, y, w)``), every evaluation with its metrics, and the checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.evolution.config import SearchConfig  # noqa: E402
from gp_loss.evolution.script import main, run_script  # noqa: E402

TASK_FLAGS = {
    "--data": ("data", str, "'digits' (built in: digit canvases with 5 ink keypoints each) or a COCO keypoints JSON"),
    "--val-data": ("val_data", str, "a validation keypoints JSON (default: a seeded split of --data)"),
    "--canvases": ("canvases", int, "built-in data: digit canvases drawn (training + validation; default 300)"),
    "--model": ("model", str, "small (default, CPU scale), resnet18, resnet34 or resnet50 (SimpleBaseline's head)"),
    "--crop-height": ("crop_height", int, "each instance's crop height in pixels (default 64)"),
    "--crop-width": ("crop_width", int, "each instance's crop width in pixels (default 64)"),
    "--heatmap-sigma": ("heatmap_sigma", float, "the target Gaussian's standard deviation in heatmap cells "
                                                "(default 1)"),
    "--oks-sigmas": ("oks_sigmas", str, "OKS sigmas: one value or K comma-separated (default: COCO's for its "
                                        "17 person keypoints, else 0.05 each)"),
    "--batch-size": ("batch_size", int, "crops per step"),
    "--lr": ("lr", float, "learning rate (Adam)"),
    "--proxy-steps": ("proxy_steps", int, "steps of a proxy training (fitness: the validation metric after them)"),
    "--final-steps": ("final_steps", int, "steps of the final retraining"),
    "--metric": ("metric", str, "fitness: AP (default), AP50 or AP75 (OKS)"),
}

# AutoLoss-Zero's aging evolution on the `pose` branch, its first genomes the baseline and random
# losses; sized for 2 CPU cores with the task's small network and a shortened proxy, whose collapse
# check ends most random losses' trainings at a third (README, "Pose"). The final top is chosen from
# the hall of fame's best two on one seed (the rest are mostly collapsed random losses, whose full
# retraining the collapse check no longer cuts short), and retrained beside the baseline.
DEFAULTS = SearchConfig(task="pose", scheme="zero", branches={"pose": "heat"}, start={},
                        task_options={"proxy_steps": 100},
                        population=12, offspring_per_generation=6, max_evaluations=40, warm_start="baselines",
                        final_top=1, selection_seeds=1, final_seeds=3, baselines=["mse"], torch_threads=2,
                        eval_time_limit_s=120.0)

if __name__ == "__main__":
    # Exit 2 on a user error and non-zero on a crash, serially, with multiprocessing and under SCOOP.
    run_script(lambda: main(__doc__, DEFAULTS, "out/search_pose", TASK_FLAGS))
