"""A check across two processes: the program's function runs in one, the test in the other.

With a check, the runner (``sandbox_child.py``) starts two siblings under init:

- the program process runs program.py, then answers calls (``run_and_answer``): the checker
  names the function the check calls and sends the arguments of each call; it sends back what
  the function returned, or what it raised;
- the checker (``run_checker``) reads the check (the tool's token, the function's name, helpers
  and test) from a pipe that only it holds, confines itself, and runs the test with the
  program's function replaced by a ``Candidate`` that returns the plain data rebuilt from the
  program's replies. It reports the verdict, with the token, on the tool's pipe.

Messages cross in the wire format of ``sandbox_wire.py``, from which only plain data can be
rebuilt; the program process never holds the check, the token or the tool's pipe.

The runner loads this file by its path under ``python -I -S`` (after ``sandbox_wire``, which it
registers in ``sys.modules`` under that name), before any of the program's code runs: it must
import only the standard library.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
from collections.abc import Callable

if __package__:  # imported as part of learnforget
    from learnforget.measure.sandbox_wire import WIRE_LIMIT, Channel, WireError, decode
else:  # loaded by the runner, which put the wire format in sys.modules under this name
    from sandbox_wire import WIRE_LIMIT, Channel, WireError, decode

LOST_EXIT = 3  # the checker's exit status when the program process stopped answering


def exception_text(exc: BaseException) -> str:
    """The message of an exception (a ``SystemExit``'s code), even one whose ``str`` fails."""
    try:
        return str(exc.code if isinstance(exc, SystemExit) else exc)[:2000]
    except BaseException:
        return "?"


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, or ``Type`` where it has no message."""
    text = exception_text(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def print_traceback(exc: BaseException, frames: bool = True) -> None:
    """The program's traceback without the runner's own frame."""
    try:
        import traceback

        tb = exc.__traceback__.tb_next if frames and exc.__traceback__ else None
        traceback.print_exception(type(exc), exc, tb)
    except BaseException:
        pass


# --- The program's end: in the program process, it answers the checker's calls ---------

def raised(exc: BaseException) -> tuple[str, str, str]:
    """The message that tells the checker the program raised ``exc``."""
    if not isinstance(exc, MemoryError):
        print_traceback(exc)
    return "raised", type(exc).__name__, exception_text(exc)


def run_and_answer(source: str, channel: Channel) -> int:
    """Run ``source``, then answer the checker: first the name of the function the check
    calls, then one message per call, until the checker closes the pipe."""
    try:
        compiled = compile(source, "program.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        print_traceback(exc, frames=False)
        with contextlib.suppress(OSError, WireError):
            channel.send(("uncompilable", type(exc).__name__, exception_text(exc)))
        return 1
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compiled, namespace)
    except BaseException as exc:
        with contextlib.suppress(OSError, WireError):
            channel.send(raised(exc))
        return 1
    with contextlib.suppress(OSError, EOFError, WireError):
        serve(namespace, channel)
    return 0


def serve(namespace: dict, channel: Channel) -> None:
    """Call the function the checker names with the arguments it sends; reply with a plain
    copy of the value returned, or what was raised."""
    name = channel.receive()
    function = namespace.get(name) if isinstance(name, str) else None
    if not callable(function):
        channel.send(("raised", "NameError", f"name {name!r} is not defined"))
        return
    channel.send(("ready",))
    while True:
        args, kwargs = channel.receive()
        try:
            value = function(*args, **kwargs)
        except BaseException as exc:
            channel.send(raised(exc))
            if isinstance(exc, SystemExit):
                return
            continue
        try:
            channel.send(("returned", value))
        except WireError as exc:
            channel.send(("non-plain", type(value).__name__, str(exc)))
        except BaseException as exc:  # e.g. a generator raising while it is read
            channel.send(raised(exc))


# --- The checker's end: the test runs here, against the program's replies ----------------

class CandidateEnded(BaseException):
    """The program stopped answering, or answered what the check may not see: ends the check
    whatever the check catches (a ``BaseException``, not an ``Exception``)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class CandidateError(Exception):
    """The program raised an exception that is not a built-in one."""


class Candidate:
    """What the check calls in place of the program's function: sends the arguments to the
    program process, returns the plain data rebuilt from its reply. The first ``CandidateEnded``
    is kept in ``ended``: it decides the run even where the check swallows it."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.ended: CandidateEnded | None = None

    def __call__(self, *args: object, **kwargs: object) -> object:
        try:
            return self.call(args, kwargs)
        except CandidateEnded as exc:
            self.ended = self.ended or exc
            raise

    def call(self, args: tuple, kwargs: dict) -> object:
        """One call: send, then wait for the reply."""
        if self.ended is not None:
            raise self.ended
        try:
            self.channel.send((args, kwargs))
        except WireError as exc:
            raise TypeError(f"an argument cannot be sent to the program ({exc})") from None
        except OSError:
            raise CandidateEnded("lost", "the program ended during the check") from None
        kind, payload = reply(self.channel)
        if kind != "returned":
            raise CandidateEnded("failed", "the program's reply was out of order")
        return payload


def reply(channel: Channel) -> tuple[str, object]:
    """The program's next reply as (kind, value), or the exception it stands for."""
    try:
        message = channel.receive()
    except EOFError:
        raise CandidateEnded("lost", "the program ended during the check") from None
    except WireError as exc:
        raise CandidateEnded("failed", f"the program's reply was not plain data: {exc}") from None
    kind = message[0] if isinstance(message, tuple) and message else None
    if kind == "ready" and len(message) == 1:
        return "ready", None
    if kind == "returned" and len(message) == 2:
        return "returned", message[1]
    if kind in ("raised", "uncompilable", "non-plain") and len(message) == 3 and all(
            type(part) is str for part in message):
        raise program_exception(kind, message[1], message[2])
    raise CandidateEnded("failed", "the program's reply was malformed")


def program_exception(kind: str, name: str, text: str) -> BaseException:
    """The exception the checker raises for the program's ``raised`` (or other) reply: the
    built-in exception of that name where there is one, so that a check may catch it."""
    if kind == "uncompilable":
        return CandidateEnded("error", f"{name}: {text}")
    if kind == "non-plain":
        return CandidateEnded("failed", f"the program returned a {name}: {text}")
    if name == "MemoryError":
        return CandidateEnded("error", "MemoryError")
    if name == "SystemExit":
        return CandidateEnded("failed", f"the program exited before its end (SystemExit: {text})")
    kind_of = getattr(builtins, name, None)
    if isinstance(kind_of, type) and issubclass(kind_of, Exception):
        with contextlib.suppress(Exception):
            return kind_of(text)
    return CandidateError(f"{name}: {text}")


def read_to_the_end(fd: int) -> bytes:
    """Everything left in a pipe, until its writers are gone."""
    data = bytearray()
    while chunk := os.read(fd, 65536):
        data += chunk
        if len(data) > 4 * WIRE_LIMIT:
            raise WireError("the check is too large")
    return bytes(data)


def run_checker(channel: Channel, check_fd: int, sync_fd: int, confine: Callable[[], None],
                say: Callable[..., None]) -> None:
    """In the checker process: read the check from ``check_fd``, tell the parent (which only
    then starts the program), ``confine`` itself, run the check against the program's replies
    and ``say`` the verdict with the tool's token. Never returns."""
    token = ""
    try:
        spec = read_to_the_end(check_fd)
        os.close(check_fd)
        os.write(sync_fd, b"1")
        os.close(sync_fd)
        token, entry_point, helpers, test = decode(spec)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)  # the program shares the tool's stderr file and could read it back
        os.close(null)
        confine()
        sys.dont_write_bytecode = True
    except BaseException as exc:
        say("outcome", token, "error the check could not start:", repr(exc))
        os._exit(1)
    status, reason = check_outcome(channel, entry_point, helpers, test)
    say("outcome", token, status, reason)
    os._exit(LOST_EXIT if status == "lost" else 0)


def check_outcome(channel: Channel, entry_point: str, helpers: str, test: str) -> tuple[str, str]:
    """Run ``helpers`` (trusted code the test may use, e.g. the problem's prompt) and ``test``
    in a namespace of this process, with the program's function replaced by a ``Candidate``,
    then ``check(candidate)``: (status, reason)."""
    try:
        channel.send(entry_point)
        kind, _ = reply(channel)
    except CandidateEnded as exc:
        return exc.status, exc.reason
    except OSError:
        return "lost", "the program ended before the check began"
    except BaseException as exc:  # what the program's own code raised
        return "failed", describe(exc)
    if kind != "ready":
        return "failed", "the program's reply was out of order"
    candidate = Candidate(channel)
    try:
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        exec(compile(helpers, "helpers.py", "exec", dont_inherit=True), namespace)
        namespace[entry_point] = candidate
        exec(compile(test, "check.py", "exec", dont_inherit=True), namespace)
        namespace["check"](candidate)
    except CandidateEnded as exc:
        return exc.status, exc.reason
    except MemoryError:
        return "error", "MemoryError in the check"
    except BaseException as exc:
        verdict = "failed", describe(exc) + failing_line(exc, test)
    else:
        verdict = "passed", ""
    if candidate.ended is not None:  # the check caught it, but it decides
        return candidate.ended.status, candidate.ended.reason
    return verdict


def failing_line(exc: BaseException, test: str) -> str:
    """`` (check.py line N: source)`` for the innermost frame of the test, or ``""``."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "check.py":
            found = tb.tb_lineno
        tb = tb.tb_next
    lines = test.splitlines()
    if found is None or not 0 < found <= len(lines):
        return ""
    return f" (check.py line {found}: {lines[found - 1].strip()[:300]})"
