"""The box sweep's rank helper."""
import numpy as np

from gp_loss.probes.box_sweeps import centred_ranks


def test_ranks_share_ties_and_are_centred():
    v = np.array([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    # Ranks from 0: [3, 0, 3, 1, 3] with the three 3.0s sharing (2 + 3 + 4) / 3 = 3; mean 2.
    expected = np.array([[3.0, 0.0, 3.0, 1.0, 3.0], [2.0] * 5, [4.0, 3.0, 2.0, 1.0, 0.0]]) - 2
    assert np.array_equal(centred_ranks(v), expected)
