from gp_loss.cli import entry

entry()
