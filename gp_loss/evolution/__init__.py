"""The evolution engine: typed mutations, offspring and the search loops."""
