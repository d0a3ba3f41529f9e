from garden.cli.app import main

main()
