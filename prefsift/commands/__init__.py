"""One module per `prefsift` subcommand (NAME, HELP, add_arguments, run). Discovered by cli.py."""
