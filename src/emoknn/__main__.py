from emoknn.cli import main

main()
