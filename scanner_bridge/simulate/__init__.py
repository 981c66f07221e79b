"""Offline rehearsal: a virtual subject and a simulated scanner that writes its volumes at the TR.

:class:`VirtualSubject` (:mod:`.subject`) is a brain with visual ROIs and a
ground-truth response model; :class:`BoldRun` (:mod:`.bold`) turns what it
saw into BOLD volumes with realistic noise; :class:`SimulatedScanner`
(:mod:`.scanner`) sends triggers, listens to the presenter and writes the
volumes into an export directory, where the bridge reads them like a real
scanner's. This package imports ``stimulus`` (the backbone and the
presenter's client); nothing else in ``scanner_bridge`` does.
"""
