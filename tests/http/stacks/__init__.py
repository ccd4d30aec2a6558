"""One example app per framework, each composed as docs/http.md recommends (the
docs' snippets are the regions between the ``snippet`` markers, checked by
tests/http/test_stacks.py), with sessions on as their users run them.

Importable from tests (``tests.http.stacks.fastapi_app:app`` and friends, under uvicorn
too: Flask through ``--interface wsgi``, Django through its ASGI handler), so the
browser and client-cache tests can drive the same apps.
"""
