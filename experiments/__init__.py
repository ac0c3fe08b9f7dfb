"""Experiments reproducing the paper, each a module with profile(), run() and main()."""
