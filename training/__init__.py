"""So-VITS training stage (`train.py`): launch (devices, processes, signals, logging), resume rules,
the GAN training loop and TensorBoard summaries. The dataset lives in the top-level `data_utils.py`."""
