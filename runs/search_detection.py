"""Search the losses of a torchvision detector (FCOS by default) on the built-in digit canvases or your COCO data.

    python runs/search_detection.py --out out/search_detection
    python runs/search_detection.py --data train.json --val-data val.json --backbone resnet18 --out out/mine
    python runs/search_detection.py --model fasterrcnn --out out/frcnn        # four branches: RPN and box head
    python runs/search_detection.py --scheme zero --out out/zero              # all branches from scratch
    python runs/search_detection.py --map ray --workers 4 --out out/ray  # parallel on Ray (or --ray-address HOST:PORT)
    python -m scoop -n 4 runs/search_detection.py --out out/scoop            # parallel, or multi-host
    python runs/search_detection.py --device cuda --workers-per-gpu 4 --out out/gpu   # 4 proxies per GPU
    python runs/search_detection.py --resume out/search_detection            # after an interruption

Default (``--scheme cse``, CSE-Autoloss, Liu et al., ICLR 2021): start from Focal + GIoU
(Faster R-CNN: BCE + GIoU in the RPN, CE + GIoU in the box head), search the
classification branch with the regression branch fixed, then the regression branch
with the classification branch fixed at the best found; fitness = COCO AP of a short
proxy training on the validation split. ``--scheme zero`` (AutoLoss-Zero, Li et al.,
CVPR 2022) evolves every branch from random trees. Ends by printing the best losses and
Focal + GIoU retrained for the final schedule; the run directory holds them as PyTorch
code (hall_of_fame.py), every evaluation with its COCO metrics, and the checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.evolution.config import SearchConfig  # noqa: E402
from gp_loss.evolution.script import main, run_script  # noqa: E402
from gp_loss.tasks.detection.models import DETECTORS  # noqa: E402
from gp_loss.tasks.detection.task import DetectionOptions, baseline_loss  # noqa: E402

DEFAULT_MODEL = DetectionOptions.model


def _models_text() -> str:
    """``"fcos (default), retinanet or fasterrcnn"``: the registry's detectors, for ``--model``'s help."""
    names = [f"{name} (default)" if name == DEFAULT_MODEL else name for name in DETECTORS]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


TASK_FLAGS = {
    "--model": ("model", str, _models_text()),
    "--backbone": ("backbone", str, "small (default, CPU scale), resnet18, resnet34 or resnet50 (FPN)"),
    "--data": ("data", str, "'digits' (built in) or a COCO instances JSON (file_name relative to its folder)"),
    "--val-data": ("val_data", str, "validation instances JSON (default: a seeded split of --data)"),
    "--weights": ("weights", str, "pretrained (default: the shipped small backbone; ResNets start from random "
                                  "init), none, or a state dict "
                                  "for the detector, its backbone or its ResNet"),
    "--image-size": ("image_size", int, "images are letterboxed to this square (default 96)"),
    "--batch-size": ("batch_size", int, "images per SGD step"),
    "--lr": ("lr", float, "SGD learning rate (momentum 0.9, linear warm-up)"),
    "--proxy-steps": ("proxy_steps", int, "SGD steps of a proxy training (fitness: validation AP after them)"),
    "--final-steps": ("final_steps", int, "SGD steps of the final retraining"),
    "--proxy-images": ("proxy_images", int, "training images a proxy draws from (default 0: all)"),
    "--metric": ("metric", str, "fitness: AP (default), AP50, AP75, APs, APm or APl"),
    "--precision": ("precision", str, "fp32 (default) or bf16 (forward pass and loss under autocast)"),
}


def defaults(given: dict) -> SearchConfig:
    """The default search for the detector of the given task options (:data:`DEFAULT_MODEL` unless ``model``
    says otherwise).

    Sized for 2 CPU cores with the task's default (small) proxy (README, "Measured").
    """
    model = given["task_options"].get("model", DEFAULT_MODEL)
    start = baseline_loss(model, "fl_giou").genome if isinstance(model, str) and model in DETECTORS else None
    if start is None:  # an unknown model: the configuration check names it
        return SearchConfig(task="detection", task_options={"model": model})
    scheme = given.get("scheme", "cse")
    return SearchConfig(task="detection", scheme="cse", search_in_turn=scheme == "cse",
                        branches={b.name: b.kind.name for b in start}, start=start.formulas(),
                        population=4, offspring_per_generation=4, max_evaluations=12, warm_start="baselines",
                        final_top=1, baselines=["fl_giou"], torch_threads=2, eval_time_limit_s=300.0)


if __name__ == "__main__":
    # Exit 2 on a user error and non-zero on a crash, serially, with multiprocessing and under SCOOP.
    run_script(lambda: main(__doc__, defaults, "out/search_detection", TASK_FLAGS))
