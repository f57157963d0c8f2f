"""`python predict.py`: the `vitlab-predict` command from a checkout (see vitlab.cli.predict)."""

from vitlab.cli.predict import main

if __name__ == "__main__":
    main()
