"""Semantic segmentation: a per-pixel classifier trained with a searched loss.

Data (:mod:`.data`): the built-in digit canvases (class 0 background, digit d class d + 1),
a Pascal VOC-layout folder or a COCO instances JSON, letterboxed and kept on the device.
"""
