"""The detection task's data and schedule flags, as the ``runs/`` detection scripts spell them.

flag -> (DetectionOptions field, type, default, help). ``runs/hps_det.py`` and
``runs/search_pap.py`` both train the detection task on the same data with the same SGD
schedule; each adds its own model, proxy length and search flags around these.
"""
from __future__ import annotations

DATA_AND_SCHEDULE_FLAGS = {
    "--data": ("data", str, "digits", "'digits' (built in) or a COCO instances JSON"),
    "--val-data": ("val_data", str, "", "validation instances JSON (default: a seeded split of --data)"),
    "--image-size": ("image_size", int, 64, "images are letterboxed to this square"),
    "--canvases": ("canvases", int, 96, "built-in data: canvases drawn (training + validation)"),
    "--max-digits": ("max_digits", int, 2, "built-in data: digits per canvas, 1 to this"),
    "--batch-size": ("batch_size", int, 8, "images per SGD step"),
    "--lr": ("lr", float, 0.02, "SGD learning rate (momentum 0.9, linear warm-up)"),
    "--warmup-steps": ("warmup_steps", int, 10, "linear warm-up steps"),
    # Both scripts' own defaults: their README tables were measured from random init at a constant rate.
    "--schedule": ("schedule", str, "constant", "after the warm-up: constant (default) or cosine (decay to 0)"),
    "--weights": ("weights", str, "none", "none (default: random init), pretrained (the shipped small "
                                          "backbone) or a state dict file"),
}


def check_data(options) -> None:
    """Load the data of ``options`` (a checked ``DetectionOptions``) on the CPU, so that a script's data
    error is one line before its run directory is made. Cached: a training in this process reuses it."""
    import torch

    from gp_loss.tasks.detection.data import load_detection_data

    o = options
    load_detection_data(o.data, o.val_data, o.image_size, o.canvases, o.max_digits, o.data_seed, o.split_seed,
                        o.val_fraction, torch.device("cpu"))
