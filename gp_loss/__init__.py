"""gp-loss: discover loss functions by evolutionary search over DEAP primitive trees."""
__version__ = "0.1.0"
