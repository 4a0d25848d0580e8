"""Types of the strongly typed primitive sets.

DEAP's ``PrimitiveSetTyped`` matches argument types by class, and a primitive
whose return type is a subclass of ``T`` may stand wherever ``T`` is required.
The root of every loss tree has type :class:`Tensor`, so both element-wise and
per-sample values may end a formula, while a :class:`Const` never can: a
formula made only of constants does not depend on the inputs.
"""


class Tensor:
    """Any tensor value; the return type of a whole loss tree."""

    describe = "a tensor"


class Elem(Tensor):
    """An element-wise tensor with the shape of the branch inputs.

    ``cls``/``bcls``: N×C; ``reg``: N; ``zero``: N×C×H×W.
    """

    describe = "an element-wise tensor"


class Sample(Tensor):
    """One value per sample (N; kept as N×1 while compiled so it broadcasts).

    Only ``dot`` produces it; ``softmax`` and ``dot`` do not accept it because
    a per-sample value has no class dimension left.
    """

    describe = "a per-sample value (from dot)"


class Const:
    """A numeric constant. It is only an operand of a binary operator."""

    describe = "a constant"
