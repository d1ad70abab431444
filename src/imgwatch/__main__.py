from imgwatch.cli import main

main()
