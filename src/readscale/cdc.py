"""The change-data-capture backstop (public names). See ``readscale._async.cdc.worker``.

Rules can come from code (:class:`CdcRule`) or a TOML file::

    [[rule]]
    table = "public.products"
    keys = ["product:{id}"]
    tags = ["category:{category_id}"]
    namespace = "catalog"
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from readscale._async.cdc.worker import AsyncCdcWorker
from readscale._core.cdc.rules import CdcRule, CdcSettings
from readscale._shared.cdc.stats import CdcStats
from readscale._sync.cdc.worker import CdcWorker
from readscale.errors import ConfigurationError


def load_rules(path: str | Path) -> list[CdcRule]:
    """Read CDC rules from a TOML file (``[[rule]]`` tables)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"CDC rules file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"CDC rules file {path} is not valid TOML: {exc}") from None
    rules = data.get("rule")
    if not isinstance(rules, list) or not rules:
        raise ConfigurationError(f"CDC rules file {path} has no [[rule]] tables")
    out = []
    for i, raw in enumerate(rules, 1):
        unknown = set(raw) - {"table", "keys", "tags", "namespace"}
        if unknown:
            raise ConfigurationError(f"{path}: rule {i} has unknown fields {sorted(unknown)}")
        out.append(
            CdcRule(
                table=str(raw.get("table", "")),
                keys=tuple(raw.get("keys", ())),
                tags=tuple(raw.get("tags", ())),
                namespace=str(raw.get("namespace", "")),
            )
        )
    return out


__all__ = ["AsyncCdcWorker", "CdcRule", "CdcSettings", "CdcStats", "CdcWorker", "load_rules"]
