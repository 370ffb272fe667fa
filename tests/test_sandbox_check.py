"""Checks run outside the program they decide: the wire format plain data crosses in, and how a
check behaves against the program process (exceptions, return types, crashes, limits).

The attacks that faked a pass from inside the program are in ``test_sandbox_attacks.py``."""

from __future__ import annotations

import collections
import enum
import math
import os

import pytest
from sandbox_helpers import BOTH_SETUPS, sandbox_processes

from learnforget.errors import UserError
from learnforget.measure.sandbox import Check, ExecutionResult, run_program, run_programs
from learnforget.measure.sandbox_child import WIRE_DEPTH, WireError, decode, encode

pytestmark = [pytest.mark.skipif(not os.path.isdir("/proc"), reason="the sandbox needs Linux"),
              pytest.mark.usefixtures("private_sandbox_folder")]

PLAIN = [None, True, False, 0, -7, 3 ** 5000, 1.5, -0.0, math.inf, -math.inf, 2 + 3j, "", "héllo",
         "\ud800", b"\x00\xff", [], [1, [2, [3]]], (), (1,), (1, (2, "x")), {}, {"a": 1, 2: [3]},
         {(1, 2): {3}}, {1, "a", (2,)}, frozenset({1}), range(1, 10, 3)]


@pytest.mark.parametrize("value", PLAIN, ids=[f"{type(v).__name__}-{i}" for i, v in
                                               enumerate(PLAIN)])
def test_plain_values_cross_unchanged(value):
    copy = decode(encode(value))
    assert type(copy) is type(value) and copy == value
    if isinstance(value, float):
        assert math.copysign(1, copy) == math.copysign(1, value)


def test_nan_and_iterators_cross_as_what_they_are():
    assert math.isnan(decode(encode(math.nan)))
    for produced in ((n * 2 for n in range(3)), map(str, [1, 2]), iter([1]), {"a": 1}.values()):
        copy = decode(encode(produced))
        assert iter(copy) is copy and copy != list(copy)  # an iterator, compared as one
    assert decode(encode({"a": 1, "b": 2}.keys())) == {"a", "b"}


def test_subclasses_of_plain_types_cross_as_their_base_type():
    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    point = collections.namedtuple("Point", "x y")(1, 2)
    counts = collections.defaultdict(int, {"a": 2})
    for value, plain in ((Colour.RED, 1), (Name("x"), "x"), (point, (1, 2)), (counts, {"a": 2}),
                         (collections.OrderedDict(b=1), {"b": 1})):
        copy = decode(encode(value))
        assert type(copy) is type(plain) and copy == plain
    assert decode(encode(Name("x"))) != "y"  # the always-equal __eq__ did not come along


def test_anything_else_has_no_wire_form():
    class Always:
        def __eq__(self, other):
            return True

    loop: list = []
    loop.append(loop)
    nested: list = []
    for _ in range(WIRE_DEPTH + 5):
        nested = [nested]
    for value in (Always(), [1, Always()], {"k": Always()}, object(), print, loop, nested,
                  1.5j.__class__, math):
        with pytest.raises(WireError):
            encode(value)


def test_malformed_bytes_are_refused():
    for data in (b"", b"x", b"i;", b"izz;", b"n n", b"L3:n", b"s5:ab", b"S1:L0:", b"D1:L0:n",
                 b"r0,0,0;", b"L99999999999:", b"s-1:", b"dxyz;", b"T1:" * 500 + b"n"):
        with pytest.raises(WireError):
            decode(data)


def run_checked(program: str, test: str, helpers: str = "", entry_point: str = "f",
                **limits) -> ExecutionResult:
    """Run ``program`` against ``test`` (which defines ``check(candidate)``)."""
    limits.setdefault("timeout_s", 10)
    check = Check(test=test, entry_point=entry_point, helpers=helpers)
    return run_program(program, check=check, **limits)


def test_values_compare_as_in_one_program():
    program = ("def f(kind):\n"
               "    return {'tuple': (6, 6), 'list': [6, 6], 'nan': float('nan'),\n"
               "            'gen': (n for n in [3, 1]), 'set': {1, 2}, 'none': None,\n"
               "            'dict': {'a': [1.5, -0.0]}, 'true': True}[kind]\n")
    test = ("def check(candidate):\n"
            "    assert candidate('tuple') == (6, 6) and candidate('tuple') != [6, 6]\n"
            "    assert candidate('list') == [6, 6] and candidate('list') != (6, 6)\n"
            "    assert candidate('nan') != candidate('nan')\n"
            "    assert tuple(candidate('gen')) == (3, 1) and candidate('gen') != [3, 1]\n"
            "    assert candidate('set') == {2, 1} and candidate('none') is None\n"
            "    assert candidate('dict') == {'a': [1.5, 0.0]} and candidate('true') is True\n"
            "    assert f('tuple') == (6, 6)\n")  # the entry point's name is the program's too
    assert run_checked(program, test) == ExecutionResult("passed", "")


def test_the_check_uses_its_own_helpers_and_builtins():
    helpers = "def double(x):\n    return 2 * x\n\ndef f(x):\n    '''to be completed'''\n"
    program = ("import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.sorted = lambda x: [3]\n"
               "def double(x):\n    return 0\n\ndef f(x):\n    return x + 0.5\n")
    test = ("def check(candidate):\n"
            "    assert candidate(double(1)) == 2.5\n"
            "    assert abs(candidate(1) - 9) > 1 and sorted([2, 1]) == [1, 2]\n")
    assert run_checked(program, test, helpers) == ExecutionResult("passed", "")


def test_exceptions_reach_the_check_as_built_in_exceptions():
    program = ("class Custom(Exception):\n    pass\n"
               "def f(x):\n"
               "    if x == 0:\n        raise ValueError('zero')\n"
               "    if x == 1:\n        raise Custom('mine')\n"
               "    return x\n")
    test = ("def check(candidate):\n"
            "    try:\n        candidate(0)\n    except ValueError as exc:\n"
            "        assert str(exc) == 'zero'\n"
            "    try:\n        candidate(1)\n    except Exception as exc:\n"
            "        assert 'Custom: mine' in str(exc)\n"
            "    assert candidate(2) == 2\n")
    assert run_checked(program, test) == ExecutionResult("passed", "")
    failed = run_checked(program, "def check(candidate):\n    candidate(0)\n")
    assert failed.status == "failed" and "ValueError: zero" in failed.detail, failed


def test_what_the_check_cannot_catch_still_decides():
    swallow = ("def check(candidate):\n"
               "    for arg in (1, 2):\n"
               "        try:\n            candidate(arg)\n        except BaseException:\n"
               "            pass\n")
    cases = [
        ("def f(x):\n    class A:\n        pass\n    return [A()]\n", "failed", "not plain data"),
        ("def f(x):\n    raise SystemExit(3)\n", "failed", "exited before its end"),
        ("def f(x):\n    return bytearray(8 * 1024 ** 3)\n", "error", "MemoryError"),
    ]
    results = run_programs([program for program, _, _ in cases], workers=2, timeout_s=10,
                           checks=[Check(swallow, "f")] * len(cases))
    for (_, status, reason), result in zip(cases, results, strict=True):
        assert result.status == status and reason in result.detail, result


@BOTH_SETUPS
def test_a_program_that_dies_or_hangs_during_a_call(namespaces):
    test = "def check(candidate):\n    assert candidate(1) == 1\n"
    crash = "import os, signal\ndef f(x):\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    result = run_checked(crash, test, guard=False, namespaces=namespaces)
    assert result.status == "error" and "SIGSEGV" in result.detail, result
    spin = "def f(x):\n    while True:\n        pass\n"
    assert run_checked(spin, test, timeout_s=1.5, namespaces=namespaces).status == "timed_out"
    leave = "import os\ndef f(x):\n    os._exit(0)\n"
    result = run_checked(leave, test, guard=False, namespaces=namespaces)
    assert result.status == "failed" and "before the check ended" in result.detail, result
    assert sandbox_processes() == []


def test_programs_that_do_not_load_or_lack_the_function():
    test = "def check(candidate):\n    assert candidate(1) == 1\n"
    cases = {"def f(:\n": ("error", "SyntaxError"), "raise KeyError('k')\n": ("failed", "KeyError"),
             "def g(x):\n    return x\n": ("failed", "name 'f' is not defined"),
             "f = 3\n": ("failed", "name 'f' is not defined"),
             "import sys\nsys.exit(0)\n": ("failed", "exited before its end")}
    results = run_programs(list(cases), workers=2, timeout_s=10, checks=[Check(test, "f")] * 5)
    for (status, reason), result in zip(cases.values(), results, strict=True):
        assert result.status == status and reason in result.detail, result


def test_a_failed_assertion_names_the_line_of_the_check():
    test = "def check(candidate):\n    assert candidate(1) == 1\n    assert candidate(2) == 5\n"
    result = run_checked("def f(x):\n    return x\n", test)
    assert result.status == "failed", result
    assert "check.py line 3: assert candidate(2) == 5" in result.detail


def test_checks_and_programs_must_pair_up():
    with pytest.raises(UserError, match="2 checks for 1 programs"):
        run_programs(["pass\n"], checks=[Check("", "f")] * 2)
