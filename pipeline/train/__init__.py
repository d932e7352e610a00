"""Training stage: in-sample data (data.py), the training loop (loop.py), torchrun DDP (ddp.py)."""
