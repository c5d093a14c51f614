"""The only code that touches disk: checkpoints, data samples and output files."""
