"""Command-line entry points, one module each. User mistakes print one line and exit 2."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from franken_rt.errors import FrankenError

EXIT_USAGE = 2


def user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Turn FrankenError into `prog: error: message` on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(main)
    def wrapped(*args: object, **kwargs: object) -> int:
        prog = main.__module__.rsplit(".", 1)[-1]
        try:
            return main(*args, **kwargs)
        except FrankenError as e:
            print(f"franken-{prog}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 0

    return wrapped


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad option reported as one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
