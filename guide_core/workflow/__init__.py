"""The workflow layer: what a user does with a guide once it exists.

Grouped by job, one subpackage each:

- :mod:`~guide_core.workflow.fitting`: ``fit``, ``SVI`` and ``ELBOModule`` (the
  three front doors), their arguments, stop rules, progress and warm starts;
- :mod:`~guide_core.workflow.engines`: how one step runs (recorded or eager,
  reduced over ranks, checked, updated);
- :mod:`~guide_core.workflow.draws`: posterior draws, summaries, ArviZ export
  and the PSIS k-hat;
- :mod:`~guide_core.workflow.persist`: ``save``/``load`` and the guide file;
- :mod:`~guide_core.workflow.report`: comparisons, figures and HTML reports.

It may import the core and the registry, never the cli.
"""
