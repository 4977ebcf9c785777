"""The projections Dante keeps, in the order they are folded."""

from __future__ import annotations

from typing import Any, Final

from dante.projections.jobs import JOBS_PROJECTION
from dante.projections.registry import REGISTRY
from dante.projections.tables import Projection
from dante.projections.wallets import WALLETS_PROJECTION

PROJECTIONS: Final[tuple[Projection[Any], ...]] = (REGISTRY, WALLETS_PROJECTION, JOBS_PROJECTION)
