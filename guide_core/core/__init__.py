"""The core layer: what every guide shares.

The :class:`AutoGuide` and :class:`AutoMessenger` protocols, the prototype (one
traced run frozen into per-site facts), latent steps (constrain, log-det, Delta),
packing, the ``init_to_*`` strategies and :class:`InitMessenger`, composition
(:class:`AutoGuideList`, :class:`AutoCallable`) and the dependency graph. It
imports nothing else of ``guide_core``: not the registry, the workflow or the cli.
"""
