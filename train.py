"""`python train.py`: the `vitlab-train` command from a checkout (see vitlab.cli.train)."""

from vitlab.cli.train import main

if __name__ == "__main__":
    main()
