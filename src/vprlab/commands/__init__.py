"""The top layer: what train.py, evaluate.py and the `vprlab` command run. Nothing imports it."""
