"""What a long search needs around its work, whatever it searches.

* :mod:`.parallel`: a lazy, ordered map over serial, multiprocessing or SCOOP workers;
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
