"""The loss language: formula text <-> DEAP trees -> torch callables."""
from gp_loss.language.compile import compile_loss, compile_tree
from gp_loss.language.genome import Branch, Genome
from gp_loss.language.parse import parse_formula

__all__ = ["Branch", "Genome", "compile_loss", "compile_tree", "parse_formula"]
