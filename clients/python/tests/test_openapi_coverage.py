"""Every operation of the service's openapi.yaml has a method on both clients, with the same HTTP method
and path: an operation added to the API without a client method fails here."""

from __future__ import annotations

import inspect

import yaml

from session_pool_client import OPERATIONS, AsyncSessionPoolClient, SessionPoolClient
from support import REPO, Server

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def operations(spec: dict) -> dict[str, tuple[str, str]]:
    found = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                found[op["operationId"]] = (method.upper(), path)
    return found


def check(spec: dict) -> None:
    ops = operations(spec)
    assert len(ops) >= 23
    missing = sorted(set(ops) - set(OPERATIONS))
    assert not missing, f"operations of openapi.yaml without a client method: {missing}"
    stale = sorted(set(OPERATIONS) - set(ops))
    assert not stale, f"client methods for operations the spec no longer has: {stale}"
    for op_id, (method, path) in ops.items():
        want_method, want_path, name = OPERATIONS[op_id]
        assert (want_method, want_path) == (method, path), f"{op_id}: client uses {want_method} {want_path}"
        for cls in (SessionPoolClient, AsyncSessionPoolClient):
            fn = getattr(cls, name, None)
            assert callable(fn), f"{cls.__name__} has no method {name} for {op_id}"
            assert inspect.iscoroutinefunction(fn) == (cls is AsyncSessionPoolClient), f"{cls.__name__}.{name}"
            assert fn.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_every_operation_of_the_repository_spec_has_a_method() -> None:
    check(yaml.safe_load((REPO / "openapi.yaml").read_text()))


def test_every_operation_the_running_service_describes_has_a_method(server: Server) -> None:
    with SessionPoolClient(server.url) as client:
        check(yaml.safe_load(client.openapi()))


def test_the_check_fails_for_an_operation_without_a_method() -> None:
    spec = yaml.safe_load((REPO / "openapi.yaml").read_text())
    spec["paths"]["/v1/pools/{pool}/frobnicate"] = {"post": {"operationId": "frobnicate"}}
    try:
        check(spec)
    except AssertionError as e:
        assert "frobnicate" in str(e)
    else:
        raise AssertionError("an operation without a client method went unnoticed")
