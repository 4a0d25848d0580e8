"""gp-loss: discover loss functions by evolutionary search over DEAP primitive trees."""
import os as _os

__version__ = "0.1.0"

# A worker process a search started (gp_loss.runtime.local_backends.ProcessBackend) imports this package first, before
# torch and the task code, which take seconds: it arms its death with the search here, so that a search
# killed while its workers are still starting leaves none behind (the pool's initializer runs only later).
if _os.environ.get("GP_LOSS_SEARCH_PID") == str(_os.getppid()):
    from gp_loss.runtime.local_backends import _die_with_parent

    _die_with_parent(_os.getppid())
