"""core/train_support.py: the pieces both training loops share."""
from __future__ import annotations

import torch

from core.train_support import autocast, needs_final_save, out_of_memory_message


def test_autocast_runs_in_the_asked_dtype_or_not_at_all() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), None):
        assert (a @ b).dtype == torch.float32
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), torch.bfloat16, enabled=False):
        assert (a @ b).dtype == torch.float32


def test_out_of_memory_message_names_device_step_and_advice() -> None:
    text = out_of_memory_message(torch.device("cuda", 0), 12, "Lower train.batch_size (now 8).")
    assert text == "Out of memory on cuda:0 at step 12. Lower train.batch_size (now 8)."


def test_final_save_only_for_new_unsaved_steps() -> None:
    assert needs_final_save(5, first_of_run=3, last_saved=4)
    assert not needs_final_save(5, first_of_run=3, last_saved=5)  # already saved
    assert not needs_final_save(2, first_of_run=3, last_saved=None)  # nothing trained in this run
    assert needs_final_save(3, first_of_run=3, last_saved=None)
