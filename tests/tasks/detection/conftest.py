"""Shared pieces of the detection tests: seeded batches of images with a few boxes, paper genomes.

Test modules get them through the ``det`` fixture (the tests run in importlib mode, where a
conftest is not importable).
"""
from types import SimpleNamespace

import pytest
import torch

from gp_loss.language.genome import Genome
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.tasks.detection import build_detector, target_labels

CLASSES = 3
SIZE = 64


def paper(name: str) -> str:
    return PAPER_LOSSES[name].formula


# torchvision's own losses written in the loss language (regression: GIoU, which torchvision's
# FCOS uses and RetinaNet offers as its "giou" box loss).
FOCAL_GIOU = Genome.from_formulas([("cls", "bcls", paper("sigmoid_focal")), ("reg", "reg", paper("giou"))])
FASTER_RCNN_GENOME = Genome.from_formulas([
    ("rpn_cls", "bcls", paper("bce")), ("rpn_reg", "reg", paper("giou")),
    ("rcnn_cls", "cls", paper("ce")), ("rcnn_reg", "reg", paper("giou"))])
MASK_RCNN_GENOME = Genome.from_formulas([*((b.name, b.kind.name, b.formula) for b in FASTER_RCNN_GENOME),
                                         ("mask", "bcls", paper("bce"))])
GENOMES = {"fcos": FOCAL_GIOU, "retinanet": FOCAL_GIOU, "fasterrcnn": FASTER_RCNN_GENOME,
           "maskrcnn": MASK_RCNN_GENOME}


def make_batch(detector: str, images: int = 2, size: int = SIZE, boxes: int = 3, seed: int = 0):
    """``images`` random RGB images (3×size×size in [0, 1]) each with ``boxes`` boxes of 8–30 px (Mask R-CNN:
    and ``masks``, boxes×size×size uint8, a random blob inside each box)."""
    g = torch.Generator().manual_seed(seed)
    imgs, targets = [], []
    for _ in range(images):
        imgs.append(torch.rand(3, size, size, generator=g))
        wh = 8 + 22 * torch.rand(boxes, 2, generator=g)
        xy = torch.rand(boxes, 2, generator=g) * (size - wh)
        categories = torch.randint(0, CLASSES, (boxes,), generator=g)
        target = {"boxes": torch.cat([xy, xy + wh], 1), "labels": target_labels(detector, categories)}
        if detector == "maskrcnn":
            inside = torch.zeros(boxes, size, size, dtype=torch.bool)
            for k, (x1, y1, x2, y2) in enumerate(target["boxes"].tolist()):
                inside[k, int(y1) + 1:int(y2), int(x1) + 1:int(x2)] = True
            target["masks"] = (inside & (torch.rand(boxes, size, size, generator=g) < 0.7)).to(torch.uint8)
        targets.append(target)
    return imgs, targets


def small_model(detector: str, genome=None, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_detector(detector, CLASSES, backbone="small", image_size=SIZE, genome=genome, **options)


@pytest.fixture
def det():
    """The helpers above, as one namespace."""
    return SimpleNamespace(CLASSES=CLASSES, SIZE=SIZE, paper=paper, FOCAL_GIOU=FOCAL_GIOU, GENOMES=GENOMES,
                           FASTER_RCNN_GENOME=FASTER_RCNN_GENOME, MASK_RCNN_GENOME=MASK_RCNN_GENOME,
                           make_batch=make_batch, small_model=small_model)


@pytest.fixture(autouse=True)
def _deterministic():
    """Seeded, and on 2 threads at most (the tests run on small CPU machines next to other work)."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)
