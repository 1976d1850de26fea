"""The logger every training stage writes to.

The stages log under ``atb_strategies.training.trainer``, the name training has always used, so
the CLI's output and any log filter on that name see the same lines as before the stages were
split into modules.
"""

from __future__ import annotations

import logging

log = logging.getLogger("atb_strategies.training.trainer")
