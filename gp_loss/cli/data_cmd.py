"""``gp-loss data``: write built-in data to disk in the formats users bring their own data in.

``gp-loss data digits-coco --out DIR`` writes the digit canvases the detection
tasks train on by default as a COCO folder: ``DIR/images/canvas_NNNNN.png``
(8-bit RGB) and ``DIR/instances.json`` (boxes, areas, RLE masks, the ten digit
categories; ``file_name`` relative to the JSON's folder); ``--keypoints`` adds COCO's
person-keypoints fields, five keypoints per digit from its ink
(:func:`gp_loss.data.keypoints.add_digit_keypoints`), the pose task's built-in data. A user sees exactly
what ``--data`` expects, and any COCO tool or task can read the same data.

``gp-loss data digits-voc --out DIR`` writes the canvases the segmentation task
trains on by default as a Pascal VOC folder: ``DIR/JPEGImages/canvas_NNNNN.jpg``
(quality 95), ``DIR/SegmentationClass/canvas_NNNNN.png`` (palette PNGs with VOC's
colour map: class 0 background, class d + 1 digit d) and
``DIR/ImageSets/Segmentation/train.txt`` and ``val.txt`` (a seeded ``--val-fraction``,
the same split the built-in data gets from the same seed). ``--height`` and
``--width`` draw non-square canvases (digit sizes scale with the smaller side).

Each folder is built in a hidden temporary sibling (``.DIR.XXXX.tmp``) and
renamed into place only when complete, so an interrupted run leaves no half
dataset at DIR; on an error or Ctrl-C the sibling is removed, and only a hard
kill (SIGKILL, power loss) can leave it behind, to be deleted by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import _umask, write_text_atomic

INSTANCES = "instances.json"
IMAGES = "images"
# The canvases are drawn in memory as one float32 tensor before any is written (one seed, one
# random stream: the folder equals ``draw_canvases`` of the same spec); refuse sizes that need more.
MAX_TENSOR_BYTES = 32 * 2**30


def register(sub) -> None:
    p = sub.add_parser("data", help="write built-in data sets to disk",
                       description="Write gp-loss's built-in data in the formats a search reads with --data.")
    kinds = p.add_subparsers(dest="dataset", required=True, parser_class=type(p))
    d = kinds.add_parser("digits-coco", help="the built-in digit canvases as a COCO detection folder",
                         description="Write the digit canvases (1 to --max-digits handwritten digits per "
                                     "image, boxes and RLE masks) as DIR/images/*.png and "
                                     "DIR/instances.json.")
    d.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="folder to create (must not exist, or be empty)")
    d.add_argument("--images", type=int, default=600, help="number of canvases (1..100000; default 600)")
    d.add_argument("--size", type=int, default=128,
                   help="canvas side in pixels (32..2048; default 128); digit sizes scale with it")
    d.add_argument("--height", type=int, default=None,
                   help="canvas height in pixels (32..2048; default --size): with --width, non-square canvases "
                        "whose digit sizes scale with the smaller side")
    d.add_argument("--width", type=int, default=None, help="canvas width in pixels (32..2048; default --size)")
    d.add_argument("--max-digits", type=int, default=4, help="digits per canvas at most (1..50; default 4)")
    d.add_argument("--seed", type=int, default=0, help="random seed (0..2**32-1; default 0)")
    d.add_argument("--keypoints", action="store_true",
                   help="add COCO person-keypoints fields: 5 keypoints per digit from its ink (top, bottom, left, "
                        "right, centroid), the categories' keypoint names and skeleton: the pose task's data")
    d.set_defaults(run=run_digits_coco)
    v = kinds.add_parser("digits-voc", help="the built-in digit canvases as a VOC segmentation folder",
                         description="Write the digit canvases (1 to --max-digits handwritten digits per "
                                     "image; class 0 background, class d + 1 digit d) as a Pascal VOC folder: "
                                     "DIR/JPEGImages/*.jpg, DIR/SegmentationClass/*.png (palette PNGs) and "
                                     "DIR/ImageSets/Segmentation/train.txt and val.txt.")
    v.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="folder to create (must not exist, or be empty)")
    v.add_argument("--images", type=int, default=600, help="number of canvases (2..100000; default 600)")
    v.add_argument("--size", type=int, default=128,
                   help="canvas side in pixels (32..2048; default 128); digit sizes scale with it")
    v.add_argument("--height", type=int, default=None,
                   help="canvas height in pixels (32..2048; default --size): with --width, non-square canvases "
                        "whose digit sizes scale with the smaller side")
    v.add_argument("--width", type=int, default=None, help="canvas width in pixels (32..2048; default --size)")
    v.add_argument("--max-digits", type=int, default=4, help="digits per canvas at most (1..50; default 4)")
    v.add_argument("--seed", type=int, default=0, help="random seed of the canvases and the split "
                                                       "(0..2**32-1; default 0)")
    v.add_argument("--val-fraction", type=float, default=0.25,
                   help="share of the canvases listed in val.txt (between 0 and 1; default 0.25)")
    v.set_defaults(run=run_digits_voc)
    _register_pretrain(kinds)


def _register_pretrain(kinds) -> None:
    from gp_loss.models.pretrain import STEPS, Recipe

    r = Recipe()
    b = kinds.add_parser("pretrain-backbone", help="pretrain a task's small backbone on the built-in canvases",
                         description="Pretrain the CPU-scale small backbone of the segmentation or detection task "
                                     "on built-in digit canvases drawn from a seed no task uses by default, with "
                                     "augmented colours and scales, and write its state dict to --out (and how it "
                                     "was made, its size and SHA-256 to --out.json). The tasks load the shipped "
                                     "file with their default weights 'pretrained'; give yours with --weights.")
    b.add_argument("--task", required=True, help="segmentation or detection")
    b.add_argument("--out", required=True, type=Path, metavar="FILE", help="the .pt file to write")
    b.add_argument("--seed", type=int, default=r.seed, help=f"weights, canvases and batches (default {r.seed})")
    b.add_argument("--steps", type=int, default=r.steps,
                   help="optimizer steps (default: the task's, "
                        + ", ".join(f"{t} {n}" for t, n in STEPS.items()) + ")")
    b.add_argument("--canvases", type=int, default=r.canvases, help=f"canvases drawn (default {r.canvases})")
    b.add_argument("--image-size", type=int, default=r.image_size, help=f"canvas side (default {r.image_size})")
    b.add_argument("--batch-size", type=int, default=r.batch_size, help=f"images per step (default {r.batch_size})")
    b.add_argument("--lr", type=float, default=r.lr, help="learning rate (default: the task's; Adam 3e-3 for "
                                                          "segmentation, SGD 0.02 for detection)")
    b.add_argument("--no-colour-permutation", action="store_true",
                   help="keep every image's colour channels in order (default: a random order per image)")
    b.add_argument("--min-scale", type=float, default=r.min_scale,
                   help=f"each batch's content is downscaled by a random factor from this to 1 (default "
                        f"{r.min_scale}; 1: never)")
    b.add_argument("--threads", type=int, default=r.threads,
                   help=f"torch threads (default {r.threads}; part of the recipe: sums depend on it)")
    b.set_defaults(run=run_pretrain)


def _check_range(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise GpLossError(f"{option} must be between {low} and {high}, got {value}")


def _check_out(out: Path) -> None:
    """Refuse an --out that would overwrite anything: a dataset folder is written whole or not at all."""
    if out.exists() and not out.is_dir():
        raise GpLossError(f"--out {out} is a file: give a folder that does not exist yet")
    if out.is_dir() and any(out.iterdir()):
        raise GpLossError(f"--out {out} is not empty: give a new folder, or remove this one first")


def _write_folder(out: Path, fill: Callable[[Path], None]) -> None:
    """Build ``out`` whole: ``fill`` writes into a temporary sibling, renamed to ``out`` once complete."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as err:
        raise GpLossError(f"cannot create --out {out}: {err.strerror or err}") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the dataset gets the usual permissions
        fill(tmp)
        os.replace(tmp, out)  # POSIX: replaces DIR only if it is missing or still empty
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GpLossError(f"cannot write --out {out}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pixels(images) -> np.ndarray:
    """N×3×H×W floats in [0, 1] -> N×H×W×3 uint8."""
    import torch

    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_coco_folder(out: Path, images, coco: dict) -> None:
    """Write ``images`` (N×3×H×W in [0, 1]) and ``coco`` to ``out`` through a temporary sibling."""
    from PIL import Image

    def fill(tmp: Path) -> None:
        (tmp / IMAGES).mkdir()
        for entry, image in zip(coco["images"], _pixels(images)):
            Image.fromarray(np.ascontiguousarray(image), "RGB").save(tmp / IMAGES / entry["file_name"])
        relative = {**coco, "images": [{**im, "file_name": f"{IMAGES}/{im['file_name']}"}
                                       for im in coco["images"]]}
        write_text_atomic(tmp / INSTANCES, json.dumps(relative, indent=1) + "\n")
    _write_folder(out, fill)


def write_voc_folder(out: Path, images, labels: np.ndarray, names: list[str],
                     splits: dict[str, list[int]]) -> None:
    """Write ``images`` (N×3×H×W in [0, 1]) and ``labels`` (N×H×W class indices) as a VOC folder at ``out``:
    image n as ``JPEGImages/<names[n]>.jpg`` and ``SegmentationClass/<names[n]>.png``, and each split's
    rows as ``ImageSets/Segmentation/<split>.txt`` (through a temporary sibling)."""
    from PIL import Image

    from gp_loss.data.voc import IMAGES as VOC_IMAGES, MASKS, SPLITS, write_label_png

    def fill(tmp: Path) -> None:
        for folder in (VOC_IMAGES, MASKS, str(Path(*SPLITS))):
            (tmp / folder).mkdir(parents=True)
        for name, image, label in zip(names, _pixels(images), labels):
            Image.fromarray(np.ascontiguousarray(image)).save(tmp / VOC_IMAGES / f"{name}.jpg", quality=95)
            write_label_png(tmp / MASKS / f"{name}.png", label)
        for split, rows in splits.items():
            write_text_atomic(tmp.joinpath(*SPLITS) / f"{split}.txt", "".join(f"{names[r]}\n" for r in rows))
    _write_folder(out, fill)


def run_digits_coco(args: argparse.Namespace) -> int:
    _check_range("--images", args.images, 1, 100_000)
    height, width = _canvas_shape(args)
    _check_range("--max-digits", args.max_digits, 1, 50)
    _check_range("--seed", args.seed, 0, 2**32 - 1)
    _check_memory(args.images, height, width)
    _check_out(args.out)
    from gp_loss.data.canvases import canvas_spec, draw_canvases

    drawn = draw_canvases(canvas_spec(args.images, height, width, args.max_digits, args.seed))
    coco = drawn.coco
    if args.keypoints:
        from gp_loss.data.keypoints import add_digit_keypoints
        coco = add_digit_keypoints(coco)
    write_coco_folder(args.out, drawn.images, coco)
    json_path = args.out / INSTANCES
    what, scripts = (("keypoints", ["search_pose.py"]) if args.keypoints else
                     ("instances with masks", ["search_detection.py", "search_instance_segmentation.py"]))
    print(f"wrote {len(coco['images'])} images of {width}×{height} pixels and "
          f"{len(coco['annotations'])} annotations, COCO {what} in {json_path}; search on them: "
          + " or ".join(f"python runs/{script} --data {shlex.quote(str(json_path))}" for script in scripts))
    return 0


def _canvas_shape(args: argparse.Namespace) -> tuple[int, int]:
    """``(height, width)`` of ``--height``/``--width`` (each defaulting to ``--size``), checked."""
    _check_range("--size", args.size, 32, 2048)
    height = args.size if args.height is None else args.height
    width = args.size if args.width is None else args.width
    _check_range("--height", height, 32, 2048)
    _check_range("--width", width, 32, 2048)
    return height, width


def _check_memory(images: int, height: int, width: int) -> None:
    need = images * 3 * height * width * 4
    if need > MAX_TENSOR_BYTES:
        raise GpLossError(f"--images {images} at {height}×{width} pixels needs {need / 2**30:.0f} GiB of "
                          f"memory to draw (at most {MAX_TENSOR_BYTES // 2**30}): lower --images or the size")


def run_digits_voc(args: argparse.Namespace) -> int:
    _check_range("--images", args.images, 2, 100_000)
    height, width = _canvas_shape(args)
    _check_range("--max-digits", args.max_digits, 1, 50)
    _check_range("--seed", args.seed, 0, 2**32 - 1)
    if not 0 < args.val_fraction < 1:
        raise GpLossError(f"--val-fraction must be between 0 and 1 (exclusive), got {args.val_fraction}")
    _check_memory(args.images, height, width)
    _check_out(args.out)
    from gp_loss.data.canvases import canvas_spec, draw_canvases
    from gp_loss.tasks.segmentation.data import digit_label_maps, seeded_split

    train, val = seeded_split(args.images, args.seed, args.val_fraction,
                              f"--images {args.images} with --val-fraction {args.val_fraction}")
    drawn = draw_canvases(canvas_spec(args.images, height, width, args.max_digits, args.seed))
    names = [Path(im["file_name"]).stem for im in drawn.coco["images"]]
    write_voc_folder(args.out, drawn.images, digit_label_maps(drawn.coco), names, {"train": train, "val": val})
    print(f"wrote {args.images} images of {width}×{height} pixels ({len(train)} in train.txt, {len(val)} in "
          f"val.txt) with their class masks (0 background, d + 1 digit d) as a VOC folder {args.out}; search on "
          f"them: python runs/search_segmentation.py --data {shlex.quote(str(args.out))} --num-classes 11")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    import sys

    from gp_loss.models.pretrain import Recipe, pretrain_backbone, save_backbone

    recipe = Recipe(task=args.task, seed=args.seed, steps=args.steps, canvases=args.canvases,
                    image_size=args.image_size, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                    permute_colours=not args.no_colour_permutation, min_scale=args.min_scale)
    recipe.check()
    if args.out.exists() and not args.out.is_file():
        raise GpLossError(f"--out {args.out} is not a file: give the path of the .pt file to write")
    try:  # before minutes of training, not after
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GpLossError(f"cannot write --out {args.out}: {err.strerror or err}") from None
    if not os.access(args.out.parent, os.W_OK):
        raise GpLossError(f"cannot write --out {args.out}: its folder is not writable")
    state, record = pretrain_backbone(recipe, log=lambda line: print(line, file=sys.stderr, flush=True))
    record = save_backbone(state, record, args.out)
    figures = ", ".join(f"{k.removeprefix('validation_')} {v:.3f}" for k, v in record.items()
                        if k.startswith("validation_"))
    print(f"wrote the pretrained small {args.task} backbone to {args.out} ({record['bytes'] / 1024:.0f} KiB, "
          f"sha256 {record['sha256'][:12]}…; {record['seconds']:.0f} s; on its validation canvases {figures}) "
          f"and how it was made to {args.out}.json; use it: --weights {args.out}")
    return 0
