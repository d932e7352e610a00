"""The columns of a member's ``log.csv`` (one row per epoch), stated once for the train stage that
writes it and the report and notebooks that read it. Importing this module loads no torch."""

LOG_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_mcc", "seconds",
               "images_per_s", "val_diff"]
