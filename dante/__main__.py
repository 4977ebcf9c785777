from dante.cli import main

main()
