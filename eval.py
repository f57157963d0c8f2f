"""`python eval.py`: the `vitlab-eval` command from a checkout (see vitlab.cli.eval)."""

from vitlab.cli.eval import main

if __name__ == "__main__":
    main()
