"""Fitting a guide: ``fit`` (:mod:`.loop`), ``SVI`` (:mod:`.svi`) and
``ELBOModule`` (:mod:`.elbo_module`), the three front doors to one engine;
the checks of ``fit``'s arguments (:mod:`.arguments`), what it returns
(:mod:`.result`), its stop rule (:mod:`.convergence`), its progress display
(:mod:`.progress`), the Pathfinder warm start (:mod:`.pathfinder_start`) and
the guides that bring their own procedure (:mod:`.own_procedure`)."""
