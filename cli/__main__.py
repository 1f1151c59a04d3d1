"""`python -m carechain.cli`: the same as the `carechain` command."""

from carechain.cli.launch import main

main()
