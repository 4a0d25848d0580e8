"""Reading PAP parameters from a file (``gp-loss evaluate --loss pap=PATH``).

A file holds one of:

- :meth:`PAPParameters.to_json`'s document (``{"format": "gp-loss/pap-parameters", ..., "theta": [41]}``
  or ``{..., "named": "sigmoid"}``), or an object with just ``"theta"`` (41 numbers in [0, 1]);
- a bare JSON list of the 41 θ values (or 9: one function shared by the five, then the gradient scale);
- a PPO search's ``results.json`` (:class:`gp_loss.pap.ppo.PPOResult`): its ``best_theta`` (41 or 9 values).

Every problem (no such file, not readable, not JSON, not 41 numbers in [0, 1], ...) is one
:class:`~gp_loss.errors.GpLossError` line naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.pap.substitutions import SHARED_THETA_SIZE, PAPParameters


def read_pap_parameters(path: str | Path) -> PAPParameters:
    """The :class:`PAPParameters` a file holds (see the module's docstring for the formats)."""
    p = Path(path)
    where = f"PAP parameters file {str(path)!r}"
    if not str(path).strip():
        raise GpLossError("PAP parameters: give a file, e.g. pap=run/results.json")
    if not p.is_file():
        raise GpLossError(f"{where}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise GpLossError(f"{where}: cannot be read: {_one_line(err)}") from None
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise GpLossError(f"{where}: not JSON: {_one_line(err)}") from None
    except RecursionError:  # nested past the parser's depth, which no PAP parameters file comes near
        raise GpLossError(f"{where}: not PAP parameters (JSON nested too deeply)") from None
    try:
        if isinstance(doc, dict) and "theta" not in doc and "named" not in doc and "best_theta" in doc:
            if doc["best_theta"] is None:  # a search that has no result yet
                raise GpLossError("the results hold no best_theta yet")
            theta = doc["best_theta"]
            return PAPParameters.from_theta(theta, shared=isinstance(theta, list) and len(theta) == SHARED_THETA_SIZE)
        return PAPParameters.from_json(text)
    except GpLossError as err:
        message = str(err).removeprefix("PAP parameters: ")
        raise GpLossError(f"{where}: {_one_line(message)}") from None


MAX_DETAIL = 300  # characters of a problem's detail: it may quote a value of any size from the file


def _one_line(err) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"
