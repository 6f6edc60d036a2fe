"""What a fitted guide says: posterior draws, their summary and ArviZ export
(:mod:`.posterior`), and how good it is, the PSIS k-hat (:mod:`.diagnostics`).
The drawing itself is the core's (:mod:`guide_core.core.draws`)."""
