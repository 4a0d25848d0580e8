"""Top-down pose estimation (AutoLoss-Zero's pose task): keypoint heatmaps of each ground-truth box's crop.

Data (:mod:`.data`): the built-in digit canvases with ink keypoints, or a COCO keypoints JSON;
model (:mod:`.models`): SimpleBaseline's deconvolution head on a ResNet or a small CPU body;
heatmaps (:mod:`.heatmaps`): Gaussian targets and arg-max decoding; task (:mod:`.task`).
"""
