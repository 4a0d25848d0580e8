"""Small networks for proxy training and the filters' simulations."""
