"""Pure HTTP caching policy: header grammar, policies, validators, conditionals, tags.

No I/O, no clock, no randomness: drivers in :mod:`readscale.http` feed facts in and
write the returned fields out.
"""

from readscale._core.http.cache_control import CacheControl, parse_cache_control
from readscale._core.http.cache_status import CacheStatus, append_cache_status, parse_cache_status
from readscale._core.http.conditional import (
    NO_CONDITIONALS,
    Conditionals,
    NotModified,
    Outcome,
    PreconditionFailed,
    Proceed,
    Validators,
    evaluate,
    held_variant,
    not_modified_headers,
    parse_conditionals,
)
from readscale._core.http.cookies import CLEAR_SITE_CACHE, removes_cookie
from readscale._core.http.dates import format_http_date, parse_http_date
from readscale._core.http.decide import Exchange, HeaderPlan, carried_identity, decide, expected_vary
from readscale._core.http.etag import (
    ANY,
    EntityTag,
    parse_entity_tag,
    parse_tag_list,
    strong_etag,
    strong_etag_field,
    strong_etag_opaque,
    variant_etag,
    variant_key,
    version_etag,
)
from readscale._core.http.policy import DEFAULT_POLICY, ONE_YEAR, HttpPolicy, HttpSettings
from readscale._core.http.surrogate import BUDGETS, OverBudget, TagHeaders, Vendor, render_tags, wire_tag

__all__ = [
    "ANY",
    "BUDGETS",
    "CLEAR_SITE_CACHE",
    "DEFAULT_POLICY",
    "NO_CONDITIONALS",
    "ONE_YEAR",
    "CacheControl",
    "CacheStatus",
    "Conditionals",
    "EntityTag",
    "Exchange",
    "HeaderPlan",
    "HttpPolicy",
    "HttpSettings",
    "NotModified",
    "Outcome",
    "OverBudget",
    "PreconditionFailed",
    "Proceed",
    "TagHeaders",
    "Validators",
    "Vendor",
    "append_cache_status",
    "carried_identity",
    "decide",
    "evaluate",
    "expected_vary",
    "format_http_date",
    "held_variant",
    "not_modified_headers",
    "parse_cache_control",
    "parse_cache_status",
    "parse_conditionals",
    "parse_entity_tag",
    "parse_http_date",
    "parse_tag_list",
    "removes_cookie",
    "render_tags",
    "strong_etag",
    "strong_etag_field",
    "strong_etag_opaque",
    "variant_etag",
    "variant_key",
    "version_etag",
    "wire_tag",
]
