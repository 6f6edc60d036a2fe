""":class:`AutoSemiDAIS`'s ``median`` and ``quantiles``.

The globals' summaries are the global guide's own. The locals' posterior
(Gaussians moved by K Langevin steps) has no closed form, so their
summaries are empirical quantiles of seeded draws over the whole plate: the
same seed (``summary_seed``) gives the same summaries, also after loading.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from pyro import poutine

from guide_core.plugin import empirical_quantiles

from .plates import local_subsample, summary_chunks

__all__ = ["SemiSummaries"]


class SemiSummaries:
    """Mixin of :class:`~.semi.AutoSemiDAIS`: its sampled summaries."""

    def _local_draws(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """:attr:`num_summary_samples` draws of the local matrix ``(n, M, D)``
        from :attr:`summary_seed`, each given a fresh draw of the globals: at
        the model's own ``subsample=`` indices, else at every element of the
        plate (in chunks of the model's subsample size)."""
        like, plate = self.eta_coeff, self._layout.plate
        devices = [like.device.index or 0] if like.device.type == "cuda" else []
        draws = []
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=devices))
            stack.enter_context(torch.enable_grad())
            stack.enter_context(poutine.block())
            torch.manual_seed(self.summary_seed)
            for _ in range(int(self.num_summary_samples)):
                self._create_plates(*args, **kwargs)
                _, local_args, local_kwargs = self._globals(args, kwargs)
                indices, size, _ = local_subsample(
                    self.local_model, local_args, local_kwargs, plate
                )
                chunks = summary_chunks(indices, size, plate.full_size, like.device)
                z = torch.cat(
                    [
                        self._local_trajectories(
                            idx, local_args, local_kwargs, create_graph=False
                        )[0].detach()
                        for idx in chunks
                    ]
                )
                draws.append(z[: plate.full_size] if indices is None else z)
        return torch.stack(draws)

    def _local_summaries(
        self, q: torch.Tensor, args: tuple, kwargs: dict
    ) -> dict[str, torch.Tensor]:
        latent = empirical_quantiles(self._local_draws(args, kwargs), q)
        values = self._layout.unpack(latent)
        return {
            s.name: s.site.require_transform()(values[s.name])
            for s in self._layout.slots
        }

    def _median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        result = (
            dict(self.global_guide.median(*args, **kwargs)) if self.global_guide else {}
        )
        half = torch.tensor([0.5])
        local = self._local_summaries(half, args, kwargs)
        result.update({n: v[0] for n, v in local.items()})
        return result

    def _quantiles(
        self, q: torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        result = {}
        if self.global_guide is not None:
            result.update(self.global_guide.quantiles(q, *args, **kwargs))
        result.update(self._local_summaries(q, args, kwargs))
        return result
