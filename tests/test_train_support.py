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


def test_rng_state_leaves_cuda_alone_in_a_process_that_does_not_use_it(monkeypatch) -> None:
    """A CPU run on a machine with a GPU (train.py --device cpu) must not start CUDA when it saves."""
    import random

    from core.train_support import rng_state, set_rng_state

    def touched() -> None:
        raise AssertionError("CUDA was started")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", touched)
    state = rng_state()
    assert "cuda" not in state
    expected = (torch.rand(3), random.random())
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)])
    assert len(rng_state()["cuda"]) == 1  # a CUDA run keeps its GPU states
