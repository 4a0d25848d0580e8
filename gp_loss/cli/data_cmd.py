"""``gp-loss data``: write built-in data to disk in the formats users bring their own data in.

``gp-loss data digits-coco --out DIR`` writes the digit canvases the detection
tasks train on by default as a COCO folder: ``DIR/images/canvas_NNNNN.png``
(8-bit RGB) and ``DIR/instances.json`` (boxes, areas, RLE masks, the ten digit
categories; ``file_name`` relative to the JSON's folder). A user sees exactly
what ``--data`` expects, and any COCO tool or task can read the same data.

The folder is built in a hidden temporary sibling (``.DIR.XXXX.tmp``) and
renamed into place only when complete, so an interrupted run leaves no half
dataset at DIR; on an error or Ctrl-C the sibling is removed, and only a hard
kill (SIGKILL, power loss) can leave it behind, to be deleted by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

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
    d.add_argument("--max-digits", type=int, default=4, help="digits per canvas at most (1..50; default 4)")
    d.add_argument("--seed", type=int, default=0, help="random seed (0..2**32-1; default 0)")
    d.set_defaults(run=run_digits_coco)


def _check_range(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise GpLossError(f"{option} must be between {low} and {high}, got {value}")


def _check_out(out: Path) -> None:
    """Refuse an --out that would overwrite anything: a dataset folder is written whole or not at all."""
    if out.exists() and not out.is_dir():
        raise GpLossError(f"--out {out} is a file: give a folder that does not exist yet")
    if out.is_dir() and any(out.iterdir()):
        raise GpLossError(f"--out {out} is not empty: give a new folder, or remove this one first")


def write_coco_folder(out: Path, images, coco: dict) -> None:
    """Write ``images`` (N×3×H×W in [0, 1]) and ``coco`` to ``out`` through a temporary sibling."""
    import torch
    from PIL import Image

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as err:
        raise GpLossError(f"cannot create --out {out}: {err.strerror or err}") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the dataset gets the usual permissions
        (tmp / IMAGES).mkdir()
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        for entry, image in zip(coco["images"], pixels):
            Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), "RGB").save(
                tmp / IMAGES / entry["file_name"])
        relative = {**coco, "images": [{**im, "file_name": f"{IMAGES}/{im['file_name']}"}
                                       for im in coco["images"]]}
        write_text_atomic(tmp / INSTANCES, json.dumps(relative, indent=1) + "\n")
        os.replace(tmp, out)  # POSIX: replaces DIR only if it is missing or still empty
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GpLossError(f"cannot write --out {out}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_digits_coco(args: argparse.Namespace) -> int:
    _check_range("--images", args.images, 1, 100_000)
    _check_range("--size", args.size, 32, 2048)
    _check_range("--max-digits", args.max_digits, 1, 50)
    _check_range("--seed", args.seed, 0, 2**32 - 1)
    need = args.images * 3 * args.size**2 * 4
    if need > MAX_TENSOR_BYTES:
        raise GpLossError(f"--images {args.images} at --size {args.size} needs {need / 2**30:.0f} GiB of "
                          f"memory to draw (at most {MAX_TENSOR_BYTES // 2**30}): lower --images or --size")
    _check_out(args.out)
    from gp_loss.data.canvases import draw_canvases, square_spec

    drawn = draw_canvases(square_spec(args.images, args.size, args.max_digits, args.seed))
    write_coco_folder(args.out, drawn.images, drawn.coco)
    json_path = args.out / INSTANCES
    print(f"wrote {len(drawn.coco['images'])} images and {len(drawn.coco['annotations'])} annotations, "
          f"COCO instances in {json_path}; search on them: "
          f"python runs/search_detection.py --data {json_path}")
    return 0
