"""The evolution engine.

* ``algorithms``: the loops of the two schemes, read top to bottom (``schemes``: their names);
* ``search``: the evolution state and the steps the loops call; ``recorder``: what it writes;
* ``jobs``: what workers run (typed jobs and results); ``worker``: a worker's per-process state;
* ``variation``: breeding modes and variations; ``mutation``, ``crossover``: the operators;
* ``individual``: DEAP's classes; ``hall_of_fame``, ``run_files``, ``plot``: the run's files;
* ``config``, ``script``, ``run_search``: configuration, command line, a search end to end.

Parallel map, checkpoints, the run directory and atomic writes are :mod:`gp_loss.runtime`'s.
"""
