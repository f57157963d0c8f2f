"""The budget cap a test appends to a training command (one epoch, one batch of each split), and
the one short digits run the tests that need a trained classifier share (``digits_run``)."""

CAP = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
)
# a logger that writes no W&B run: nothing reads one from this run
DIGITS_RUN = ("train.py", *CAP, "logger=csv")
