"""Search a semantic-segmentation loss from scratch (AutoLoss-Zero) on the built-in digit canvases or your data.

    python runs/search_segmentation.py --out out/search_segmentation
    python runs/search_segmentation.py --metric bf1 --out out/bf1                 # target boundary F1
    python runs/search_segmentation.py --data VOCdevkit/VOC2012 --model deeplabv3_resnet50 --image-size 256 \\
        --device cuda --workers-per-gpu 4 --out out/voc                            # a Pascal VOC folder
    python runs/search_segmentation.py --data instances.json --out out/coco      # COCO instances, drawn as masks
    python runs/search_segmentation.py --map ray --workers 4 --out out/ray  # parallel on Ray (or --ray-address HOST:PORT)
    python -m scoop -n 4 runs/search_segmentation.py --out out/scoop            # parallel, or multi-host
    python runs/search_segmentation.py --resume out/search_segmentation          # after an interruption

AutoLoss-Zero (Li et al., CVPR 2022): aging evolution of losses built from random trees of
its primitive set (element-wise operators and aggregations over N×C×H×W tensors) on the
softmax probabilities ``yhat`` and one-hot labels ``y``; candidates pass its
loss-rejection protocol and gradient-equivalence check before a short proxy training,
whose fitness is the validation metric (mIoU by default; ``--metric`` bf1, biou, fwiou,
macc or aacc). Ends by printing the best losses and cross-entropy retrained for the
final schedule with every metric (mIoU, BF1, boundary IoU, ...); the run directory holds
them as PyTorch code (``hall_of_fame.py``: ``seg(yhat, y)``), every evaluation with its
metrics, and the checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.evolution.config import SearchConfig  # noqa: E402
from gp_loss.evolution.script import main, run_script  # noqa: E402

TASK_FLAGS = {
    "--data": ("data", str, "'digits' (built in), a Pascal VOC folder (JPEGImages, SegmentationClass, "
                            "ImageSets/Segmentation) or a COCO instances JSON"),
    "--canvases": ("canvases", int, "built-in data: digit canvases drawn (training + validation; default 400)"),
    "--val-data": ("val_data", str, "COCO: a validation instances JSON (default: a seeded split of --data)"),
    "--train-split": ("train_split", str, "VOC: the training image list (ImageSets/Segmentation/NAME.txt; train)"),
    "--val-split": ("val_split", str, "VOC: the validation image list (default val)"),
    "--num-classes": ("num_classes", int, "classes including background (default: from the data; VOC 21)"),
    "--model": ("model", str, "small (default, CPU scale), lraspp_mobilenet_v3_large, deeplabv3_mobilenet_v3_large, "
                              "deeplabv3_resnet50 or fcn_resnet50"),
    "--weights": ("weights", str, "pretrained (default: the shipped small backbone; torchvision's models start "
                                  "from random init), none, or a state dict for the model or its backbone"),
    "--image-size": ("image_size", int, "images are letterboxed to this square for training (default 96)"),
    "--batch-size": ("batch_size", int, "images per step"),
    "--optimizer": ("optimizer", str, "adam (default) or sgd (momentum 0.9)"),
    "--lr": ("lr", float, "learning rate"),
    "--proxy-steps": ("proxy_steps", int, "steps of a proxy training (fitness: the validation metric after them)"),
    "--final-steps": ("final_steps", int, "steps of the final retraining"),
    "--collapse-check": ("collapse_check", float, "stop a proxy at this fraction of its steps if its metric is no "
                                                  "better than one class everywhere (default 1/3; 0: never)"),
    "--metric": ("metric", str, "fitness: mIoU (default), BF1, BIoU, FWIoU, mAcc or aAcc (any case)"),
    "--boundary-tolerance": ("boundary_tolerance", int, "BF1 and boundary IoU tolerance in pixels (default 2)"),
    "--precision": ("precision", str, "fp32 (default) or bf16 (forward pass under autocast)"),
}

# AutoLoss-Zero's aging evolution on the `seg` branch, its K = 20 first genomes the baselines and
# random losses; sized for 2 CPU cores with the task's default (small) proxy, whose collapse check
# ends most random losses' trainings at a third (README, "Measured"). The baselines are retrained
# beside the found losses.
DEFAULTS = SearchConfig(task="segmentation", scheme="zero", branches={"seg": "zero"}, start={},
                        population=20, offspring_per_generation=10, max_evaluations=80, warm_start="baselines",
                        final_top=2, baselines=["ce", "dice"], torch_threads=2, eval_time_limit_s=300.0)

if __name__ == "__main__":
    # Exit 2 on a user error and non-zero on a crash, serially, with multiprocessing and under SCOOP.
    run_script(lambda: main(__doc__, DEFAULTS, "out/search_segmentation", TASK_FLAGS))
