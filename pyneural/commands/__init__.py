"""One module per ``pyneural`` subcommand, each with ``register(subparsers)``; see pyneural/cli.py."""
