"""One module per subcommand (`app` is `wstui PATH`), each with `add_arguments(parser)` and
`run(args) -> int` (the exit code); what they share is `_run`, and none imports another."""
