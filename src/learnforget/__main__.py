"""``python -m learnforget`` and the ``learnforget`` command: the command line."""

import signal
import sys
from typing import NoReturn


def _interrupted(message: str) -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(message, file=sys.stderr)
    sys.exit(130)


def main() -> None:
    """Run the command line. Ctrl-C while it is still starting (importing its libraries takes
    seconds) ends it with one line and exit status 130, as Ctrl-C does later, not a traceback.
    Once the command has ended, Ctrl-C is ignored: the interpreter's teardown of the ML
    libraries takes a moment, and a Ctrl-C landing in it would otherwise end the process by
    SIGINT (or print an ignored exception) although its work is done and its status known."""
    try:
        from learnforget.cli import app
    except KeyboardInterrupt:
        _interrupted("interrupted while starting: nothing was done")
    try:
        try:
            app()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt as exc:  # in the instants between the command's end and the line
        if isinstance(exc.__context__, SystemExit):  # above: the command had ended, keep its status
            raise exc.__context__ from None
        _interrupted("interrupted: run the same command again to resume")


if __name__ == "__main__":
    main()
