"""The package's VCL compiles with varnishd -C, with and without a health probe."""

from __future__ import annotations

import pytest

from readscale.stack import compile_vcl, render_vcl

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("probe", [None, "/healthz"])
def test_package_vcl_compiles(probe: str | None) -> None:
    generated_c = compile_vcl(render_vcl("http://127.0.0.1:8000", probe_path=probe))
    assert "VGC_function_vcl_recv" in generated_c
    assert "vmod_xkey" in generated_c
    assert ("/healthz" in generated_c) == (probe is not None)


def test_a_broken_vcl_is_reported() -> None:
    from readscale.errors import StackError

    broken = render_vcl("http://127.0.0.1:8000").replace("sub vcl_miss {", "sub vcl_miss {\n    nonsense;")
    with pytest.raises(StackError, match="VCL does not compile"):
        compile_vcl(broken)
