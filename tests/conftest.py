import os
import sys

# Tests import the in-tree packages even when gp-loss is not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
