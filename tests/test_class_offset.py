"""experiments.class_offset: the rare-class logit offset chosen on validation (issue 13)."""
import numpy as np

from experiments.class_offset import choose_offset, decide


def test_decide_offset_moves_only_the_class_it_names():
    log_p = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.45, 0.4, 0.15]]))
    assert decide(log_p, 0.0, 1).tolist() == [0, 2, 0]
    # +0.2 lifts class 1 over class 0 on the third slice only (0.4 e^0.2 = 0.49 > 0.45)
    assert decide(log_p, 0.2, 1).tolist() == [0, 2, 1]


def test_choose_offset_recovers_an_under_called_class_and_prefers_zero_on_ties():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [60, 10, 30])
    logits = rng.normal(0, 0.3, (100, 3))
    logits[np.arange(100), labels] += 1.0
    logits[:, 1] -= 1.5                      # the rare class is ranked right but under-called
    b, f1 = choose_offset(logits, labels, 1)
    assert b >= 1.0 and f1 > 0.9
    clean = np.eye(3)[labels] * 5.0          # already perfect: any offset in a range ties
    assert choose_offset(clean, labels, 1) == (0.0, 1.0)
