"""The rehearsal recording's HRF, against nilearn's."""

from __future__ import annotations

import numpy as np
import pytest
from nilearn.glm.first_level.hemodynamic_models import spm_hrf

from loop.rehearsal import canonical_hrf


@pytest.mark.parametrize("tr_s", [0.8, 1.0, 2.0])
def test_canonical_hrf_matches_nilearn_spm_hrf(tr_s: float) -> None:
    ours = canonical_hrf(tr_s)
    # nilearn samples finely on its own grid, delayed by one fine step; compare
    # at our sample times. (At oversampling=1 that shift would be a whole TR.)
    oversampling = 50
    fine = spm_hrf(tr_s, oversampling=oversampling, time_length=32.0)
    fine_t = np.linspace(0, 32.0, len(fine)) - tr_s / oversampling
    reference = np.interp(np.arange(len(ours)) * tr_s, fine_t, fine / fine.max())
    np.testing.assert_allclose(ours, reference, atol=0.005)
    assert 4.0 <= np.argmax(ours) * tr_s <= 6.0
