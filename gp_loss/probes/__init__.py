"""Probes: the small, fixed problems on which the filter stages judge a candidate loss.

One probe per kind and stage, built from a seed without touching the global random
state, and the measurements they share, each defined once:

- :mod:`.metrics`: accuracy, average precision, mean IoU (segmentation and boxes);
- :mod:`.boxes`: paired box areas (the ``reg`` inputs) and box decoding;
- :mod:`.digits`: the digit images the probes are made of, their intensity classes,
  and the randomly initialised probe network;
- :mod:`.samples`: one sample batch per kind (validity stage, ``gp-loss check``);
- :mod:`.logit_sweeps`, :mod:`.box_sweeps`: the convergence sweeps and their judges
  (settings in :mod:`.convergence`);
- :mod:`.rejection`: the B samples of the loss-rejection protocol per kind;
- :mod:`.simulation`: the model-optimisation simulation problem per kind;
- :mod:`.curve_sweeps`: the sweeps the report draws a kind's loss curves along.

A kind picks its probes in its :class:`~gp_loss.kinds.KindSpec`. Nothing here imports
the loss language, the kinds or the filters, so every one of them can import this.
"""
