"""Search Mask R-CNN's five losses for instance segmentation (AutoLoss-Zero, Li et al., CVPR 2022, Table 6)
on the built-in digit canvases or your COCO data with masks.

    python runs/search_instance_segmentation.py --out out/search_instance_segmentation
    python runs/search_instance_segmentation.py --data train.json --val-data val.json --backbone resnet50 --out out/mine
    python runs/search_instance_segmentation.py --scheme cse --out out/cse      # one branch at a time
    python runs/search_instance_segmentation.py --device cuda --workers-per-gpu 4 --out out/gpu
    python runs/search_instance_segmentation.py --resume out/search_instance_segmentation

Default (``--scheme zero``, AutoLoss-Zero): every branch (``rpn_cls``, ``rpn_reg``, ``rcnn_cls``,
``rcnn_reg``, ``mask``) evolved from random trees, warm-started with the baselines; fitness =
COCO mask AP (pycocotools, ``iouType="segm"``; ``--metric AP50``, ...) of a short proxy training on
the validation split, box AP recorded beside it; a proxy whose mask AP is still 0 a third of the way
in stops there. ``--scheme cse`` starts from fl_giou (BCE + GIoU, CE + GIoU, mask BCE) and searches
one branch at a time. Ends by printing the best loss retrained beside the torchvision and fl_giou
baselines on 3 paired seeds, with 95% intervals; the run directory holds the losses as PyTorch code
(hall_of_fame.py), every evaluation with its metrics, and the checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.evolution.config import SearchConfig  # noqa: E402
from gp_loss.evolution.script import main, run_script  # noqa: E402
from gp_loss.tasks.instance_segmentation.task import mask_baseline  # noqa: E402

TASK_FLAGS = {
    "--backbone": ("backbone", str, "small (default, CPU scale), resnet18, resnet34 or resnet50 (FPN)"),
    "--data": ("data", str, "'digits' (built in) or a COCO instances JSON with polygon or RLE masks"),
    "--val-data": ("val_data", str, "validation instances JSON (default: a seeded split of --data)"),
    "--weights": ("weights", str, "pretrained (default: the shipped small backbone; ResNets start from random "
                                  "init), none, or a state dict for the detector, its backbone or its ResNet"),
    "--image-size": ("image_size", int, "images are letterboxed to this square (default 96)"),
    "--batch-size": ("batch_size", int, "images per SGD step"),
    "--lr": ("lr", float, "SGD learning rate (momentum 0.9, linear warm-up)"),
    "--proxy-steps": ("proxy_steps", int, "SGD steps of a proxy training (fitness: validation mask AP after them)"),
    "--final-steps": ("final_steps", int, "SGD steps of the final retraining"),
    "--proxy-images": ("proxy_images", int, "training images a proxy draws from (default 0: all)"),
    "--metric": ("metric", str, "fitness, COCO mask: AP (default), AP50, AP75, APs, APm or APl"),
    "--precision": ("precision", str, "fp32 (default) or bf16 (forward pass and loss under autocast)"),
}


def defaults(given: dict) -> SearchConfig:
    """The default search: sized for 2 CPU cores with the task's default proxy (README, "Instance segmentation")."""
    start = mask_baseline("fl_giou").genome
    scheme = given.get("scheme", "zero")
    return SearchConfig(task="instance_segmentation", scheme=scheme, search_in_turn=scheme == "cse",
                        branches={b.name: b.kind.name for b in start}, start=start.formulas(),
                        population=6, offspring_per_generation=4, max_evaluations=8, warm_start="baselines",
                        final_top=1, selection_seeds=0, final_seeds=3, baselines=["torchvision", "fl_giou"],
                        torch_threads=2, eval_time_limit_s=300.0)


if __name__ == "__main__":
    # Exit 2 on a user error and non-zero on a crash, serially, with multiprocessing and under SCOOP.
    run_script(lambda: main(__doc__, defaults, "out/search_instance_segmentation", TASK_FLAGS))
