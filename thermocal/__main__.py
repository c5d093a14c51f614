"""`python -m thermocal` (and `torchrun ... -m thermocal`): the CLI."""

from thermocal.cli import main

main()
