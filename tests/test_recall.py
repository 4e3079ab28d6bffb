"""NoPE global layers recall across 4x the window and beyond the trained length; sliding windows alone cannot."""
import pytest

from assistant.lab.bench.recall import RecallTask, train_and_score


@pytest.mark.slow
def test_a_global_layer_recalls_beyond_the_window_and_the_training_length():
    task = RecallTask()
    accuracy, longer, _ = train_and_score(("swa", "full"), task, seconds=600, max_steps=1500)
    assert accuracy > 0.25 and longer > 0.25, (accuracy, longer)  # chance is 1/16


@pytest.mark.slow
def test_sliding_windows_alone_stay_at_chance():
    accuracy, _, _ = train_and_score(("swa", "swa"), RecallTask(), seconds=600, max_steps=600)
    assert accuracy < 0.15
