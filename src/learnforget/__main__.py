"""``python -m learnforget`` and the ``learnforget`` command: the command line."""

import sys


def main() -> None:
    """Run the command line. Ctrl-C while it is still starting (importing its libraries takes
    seconds) ends it with one line and exit status 130, as Ctrl-C does later, not a traceback."""
    try:
        from learnforget.cli import app
    except KeyboardInterrupt:
        print("interrupted while starting: nothing was done", file=sys.stderr)
        sys.exit(130)
    app()


if __name__ == "__main__":
    main()
