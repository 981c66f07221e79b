"""Real-time and after-run analysis of a run's volumes.

:mod:`.hrf` (the one haemodynamic response, which the virtual subject uses
too), :mod:`.design` (trial regressors, drifts), :mod:`.glm` (single-trial
responses: least-squares-all, least-squares-separate, the incremental fit of
a run in progress), :mod:`.roi` (ROI signals from a label atlas) and
:mod:`.motion` (rigid registration to a reference volume, framewise
displacement).
"""
