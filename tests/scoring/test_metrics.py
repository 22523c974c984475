"""IRM, LossDiff and the DPO loss against float64 torch references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prefsift.scoring import metrics

finite = st.floats(min_value=-500, max_value=0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(finite, finite, finite, finite, finite, finite), min_size=1, max_size=20),
    st.floats(min_value=0.01, max_value=2.0),
)
def test_scores_equal_torch_reference(rows, beta):
    pc, pr, vc, vr, rc, rr = (np.array(c) for c in zip(*rows))
    t = {
        k: torch.tensor(v, dtype=torch.float64)
        for k, v in dict(pc=pc, pr=pr, vc=vc, vr=vr, rc=rc, rr=rr).items()
    }
    m_pol = beta * ((t["pc"] - t["rc"]) - (t["pr"] - t["rr"]))
    m_val = beta * ((t["vc"] - t["rc"]) - (t["vr"] - t["rr"]))
    loss_pol = -torch.nn.functional.logsigmoid(m_pol)
    loss_val = -torch.nn.functional.logsigmoid(m_val)
    np.testing.assert_allclose(metrics.irm(pc, pr, rc, rr, beta), m_pol.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(metrics.dpo_loss(m_pol.numpy()), loss_pol.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        metrics.lossdiff(pc, pr, vc, vr, rc, rr, beta), (loss_pol - loss_val).numpy(), rtol=1e-9, atol=1e-10
    )


def test_dpo_loss_is_stable_at_extremes():
    m = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    loss = metrics.dpo_loss(m)
    assert np.all(np.isfinite(loss))
    assert loss[0] == pytest.approx(1e4) and loss[2] == pytest.approx(np.log(2))
    assert 0 < loss[3] < 1e-20 and loss[4] == 0.0


def test_signs_and_beta():
    # the policy raised the chosen response and lowered the rejected one: positive margin
    assert metrics.irm(-10.0, -20.0, -12.0, -18.0, beta=0.1) == pytest.approx(0.1 * (2 - (-2)))
    # θ_val prefers the chosen response more than θ does: θ's loss is higher, LossDiff > 0
    assert metrics.lossdiff(-10, -10, -5, -15, -10, -10, beta=0.1) > 0
    assert metrics.reward_accuracy(np.array([1.0, -1.0, 2.0, 0.0])) == 0.5
    with pytest.raises(ValueError):
        metrics.margin(0, 0, 0, 0, beta=0)
