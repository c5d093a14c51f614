"""The sample models' code (not part of the thermocal package): their architectures and the script
that builds the bundled samples."""
