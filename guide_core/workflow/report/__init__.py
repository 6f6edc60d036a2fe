"""Comparing and showing fits: the comparison table (:mod:`.comparison`),
matplotlib figures (:mod:`.plots`) and HTML reports (:mod:`.html`)."""
