"""The command line (a face): one module per ``tunery`` command, argument handling in ``options.py``."""
