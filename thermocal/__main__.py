from thermocal.cli import main

main()
