"""The digits the probes are made of: one segmentation target for every dense probe."""
import torch

from gp_loss.data.digits import one_per_class
from gp_loss.probes.digits import INTENSITY_CLASSES, dense_one_hot, intensity_classes, random_network


def test_intensity_classes_split_at_the_thresholds_inclusively():
    pixels = torch.tensor([0.0, 0.25, 0.26, 0.75, 0.76, 1.0]).reshape(1, 1, 2, 3)
    assert intensity_classes(pixels).tolist() == [[[0, 0, 1], [1, 2, 2]]]
    assert INTENSITY_CLASSES == 3


def test_dense_probes_share_one_target():
    # The rejection and simulation probes of ``zero`` both segment by intensity_classes.
    from gp_loss.probes.rejection import SegmentationProbe
    from gp_loss.probes.simulation import segmentation_problem

    images, _ = one_per_class(0)
    labels = intensity_classes(images)
    assert labels.shape == (10, 8, 8) and set(labels.unique().tolist()) == {0, 1, 2}
    problem = segmentation_problem(0, "cpu")
    (_, y) = problem.inputs(problem.model)
    assert torch.equal(y, dense_one_hot(labels, 3))
    samples = SegmentationProbe().make_samples(0)
    (_, y) = samples.make_inputs(samples.prediction)
    assert y.shape == (5, 4, 3, 8, 8) and torch.equal(y.sum(2), torch.ones(5, 4, 8, 8))


def test_random_network_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a, b = random_network(3), random_network(3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not random_network(4).head.weight.equal(a.head.weight)
