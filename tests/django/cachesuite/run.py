"""Run Django's ``tests/cache`` suite (``BaseCacheTests``: the contract every cache
backend of Django passes) against one backend, in this process, and write each test's
outcome as JSON.

    python -m tests.django.cachesuite.run SUITE_DIR BACKEND LOCATION OUT.json [NAMES]

NAMES (comma-separated, as the report names them): run only those tests (a rerun).

SUITE_DIR holds Django's ``cache/`` package (scripts/fetch_django_tests.py); BACKEND is
one of ``BACKENDS``. The settings are those of Django's own runtests for the suite:
``caches_setting_for_tests`` with the backend as its base, minus the culling caches (as
Django does for its Redis and memcached backends).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import unittest
from typing import Any

BACKENDS: dict[str, dict[str, Any]] = {
    "readscale-redis": {"BACKEND": "readscale.django.cache.RedisCache", "OPTIONS": {"SERIALIZER": "pickle"}},
    "readscale-memcached": {"BACKEND": "readscale.django.cache.MemcachedCache", "OPTIONS": {"SERIALIZER": "pickle"}},
    "django-redis": {"BACKEND": "django_redis.cache.RedisCache"},
}

#: Django's tests of cache_page, the cache middleware, its key functions (with i18n) and
#: template responses: written on LocMemCache, run here on the backend under test.
FRAMEWORK_SUITES = (
    "CacheUtils",
    "PrefixedCacheUtils",
    "CacheHEADTest",
    "CacheI18nTest",
    "PrefixedCacheI18nTest",
    "CacheMiddlewareTest",
    "TestWithTemplateResponse",
)


def on_backend(params: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A LocMemCache alias of Django's tests as an alias of the backend under test. A
    LocMemCache ``LOCATION`` names a store of its own; on one server the same separation
    is a key prefix of its own."""
    out = {**params, **base}
    if "LOCATION" in params:
        out["KEY_PREFIX"] = f"{params.get('KEY_PREFIX', '')}{params['LOCATION']}"
    return out


class Recorder(unittest.TextTestResult):
    """Keeps each test's outcome (and the first lines of a failure's traceback)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.details: dict[str, str] = {}

    def _name(self, test: unittest.TestCase) -> str:
        return ".".join(test.id().rsplit(".", 2)[-2:]).removeprefix("ContractTests.")

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self.outcomes.setdefault(self._name(test), "pass")

    def _bad(self, test: unittest.TestCase, kind: str, err: Any) -> None:
        name = self._name(test)
        self.outcomes[name] = kind
        self.details[name] = "".join(traceback.format_exception(*err))[-1500:]

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._bad(test, "fail", err)

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self._bad(test, "error", err)

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._bad(test, "fail", err)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self.outcomes[self._name(test)] = "skip"


def _only(suite: unittest.TestSuite, names: set[str]) -> unittest.TestSuite:
    """The tests of ``suite`` that the report would call one of ``names``."""
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(_only(test, names))
        elif ".".join(test.id().rsplit(".", 2)[-2:]).removeprefix("ContractTests.") in names:
            kept.addTest(test)
    return kept


def main(suite_dir: str, backend: str, location: str, out: str, only: str = "") -> None:
    sys.path.insert(0, suite_dir)
    import django
    from django.conf import settings

    base = {**BACKENDS[backend], "LOCATION": location}
    settings.configure(
        SECRET_KEY="readscale-django-cache-suite-secret-key",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions", "cache"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={"default": base},
        USE_TZ=False,
        LANGUAGE_CODE="en",  # as Django's runtests sets it (the i18n tests expect "en")
        MIDDLEWARE=[],
        ROOT_URLCONF=None,
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.test import TestCase, override_settings
    from django.test.utils import get_runner, setup_test_environment, teardown_test_environment

    from cache import tests as suite  # type: ignore[import-not-found]

    @override_settings(CACHES=suite.caches_setting_for_tests(base=base, exclude={"cull", "zero_cull"}))
    class ContractTests(suite.BaseCacheTests, TestCase):  # type: ignore[misc, name-defined]
        pass

    classes: list[type] = [ContractTests]
    for name in FRAMEWORK_SUITES:  # the same tests, on this backend instead of LocMemCache
        parent = getattr(suite, name)
        caches = {alias: on_backend(params, base) for alias, params in parent._overridden_settings["CACHES"].items()}
        classes.append(override_settings(CACHES=caches)(type(name, (parent,), {"__module__": __name__})))

    setup_test_environment()
    runner = get_runner(settings)(verbosity=0, interactive=False)
    old = runner.setup_databases()
    started = time.monotonic()
    try:
        loader = unittest.defaultTestLoader
        tests = unittest.TestSuite(loader.loadTestsFromTestCase(cls) for cls in classes)
        if only:
            tests = _only(tests, set(only.split(",")))
        result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0, resultclass=Recorder).run(tests)
    finally:
        runner.teardown_databases(old)
        teardown_test_environment()
    assert isinstance(result, Recorder)
    report = {
        "backend": backend,
        "django": django.get_version(),
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": result.outcomes,
        "details": result.details,
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
