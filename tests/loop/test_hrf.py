"""The one HRF (the analysis's designs and the virtual subject's BOLD), against nilearn's."""

from __future__ import annotations

import numpy as np
import pytest
from nilearn.glm.first_level.hemodynamic_models import spm_hrf
from scipy.integrate import quad

from loop.analysis.hrf import hrf, hrf_integral


@pytest.mark.parametrize("tr_s", [0.8, 1.0, 2.0])
def test_the_hrf_matches_nilearn_spm_hrf(tr_s: float) -> None:
    ours = hrf(np.arange(0.0, 32.0, tr_s))
    # nilearn samples finely on its own grid, delayed by one fine step; compare
    # at our sample times. (At oversampling=1 that shift would be a whole TR.)
    oversampling = 50
    fine = spm_hrf(tr_s, oversampling=oversampling, time_length=32.0)
    fine_t = np.linspace(0, 32.0, len(fine)) - tr_s / oversampling
    reference = np.interp(np.arange(len(ours)) * tr_s, fine_t, fine / fine.max())
    np.testing.assert_allclose(ours, reference, atol=0.005)
    assert 4.0 <= np.argmax(ours) * tr_s <= 6.0


def test_its_integral_is_the_integral_and_a_delay_shifts_both() -> None:
    for t in (0.5, 3.0, 7.5, 20.0):
        exact, _ = quad(lambda s: float(hrf(s)), 0.0, t)
        assert float(hrf_integral(t)) == pytest.approx(exact, abs=1e-6)
    assert float(hrf_integral(5.0, delay_s=1.0)) == pytest.approx(float(hrf_integral(4.0)))
    assert float(hrf(6.0, delay_s=1.0)) == pytest.approx(float(hrf(5.0)))
