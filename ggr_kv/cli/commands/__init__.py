"""``ggr-kv`` subcommands, one module each (``add_arguments(parser)``, ``main(args)``)."""
