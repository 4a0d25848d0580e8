"""Instance segmentation: torchvision's Mask R-CNN with five searchable loss branches; fitness = COCO mask AP.

:mod:`.data` loads masks with the detection data, :mod:`.task` is the task (``INFO`` registers it).
"""
