"""What a long search needs around its work, whatever it searches.

* :mod:`.backend`: the parallel-evaluation interface (:class:`~.backend.Backend`: map, submit, wait);
* :mod:`.local_backends`, :mod:`.scoop_backend`, :mod:`.ray_backend`: serial and multiprocessing,
  SCOOP, and Ray (local or a cluster);
* :mod:`.parallel`: choosing and starting a backend by its ``--map`` name;
* :mod:`.script`: the exit statuses of the ``runs/`` scripts (2 user error, 1 crash, 130 Ctrl-C);
* :mod:`.worker_limits`: how many worker processes this machine can hold;
* :mod:`.checkpoint`: checksummed JSON state, written atomically, the previous copy kept;
* :mod:`.run_dir`: a run directory of JSON, JSONL and CSV files;
* :mod:`.atomic`: atomic file writes;
* :mod:`.threads`: torch's intra-op thread count;
* :mod:`.device`: where training runs (CPU or which GPU);
* :mod:`.terminal`: text from files made safe to print on a terminal.

The evolution engine (:mod:`gp_loss.evolution`) uses it, and so can any other
search (a hyper-parameter search, say) without importing the GP engine: nothing
here imports DEAP, the operator sets, the loss language, the filters, the
evolution or the tasks.
"""
