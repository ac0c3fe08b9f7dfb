"""Where the command line's units of work run: the executor the flags choose. The library
knows only the executor seam (:mod:`actsteer.executor`); choosing Ray happens here, and Ray
is imported only when asked for."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from actsteer.cli.errors import CliError, RayUnavailableError

if TYPE_CHECKING:
    from actsteer.executor import Executor, ModelSpec

__all__ = ["RAY_EXTRA", "make_executor", "ray_executor"]

RAY_EXTRA = 'pip install "actsteer[ray]"'
"""How to install the optional Ray executor."""


def make_executor(args: argparse.Namespace, config: Any) -> Executor | None:
    """The executor the flags ask for (None: local), checked before any work: asking
    for Ray without Ray installed ends here, with the extra to install."""
    if args.executor == "local":
        for flag, value in (("--workers", args.workers), ("--ray-address", args.ray_address),
                            ("--unit-timeout", args.unit_timeout)):
            if value is not None:
                raise CliError(f"{flag} applies to --executor ray only")
        return None
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers {args.workers} is invalid; use 1 or more")
    if args.unit_timeout is not None and not args.unit_timeout > 0:
        raise CliError(f"--unit-timeout {args.unit_timeout:g} is invalid; give seconds > 0")
    limit = {} if args.unit_timeout is None else {"unit_timeout_s": args.unit_timeout}
    return ray_executor(config.model.spec(), workers=args.workers, address=args.ray_address,
                        **limit)


def ray_executor(spec: ModelSpec, *, workers: int | None = None,
                 address: str | None = None, **options: Any) -> Executor:
    """A :class:`~actsteer.ray_executor.RayExecutor` loading ``spec`` on ``workers`` actors,
    on a Ray started here (``address`` None) or the cluster at ``address`` (``"auto"``: the
    one this machine belongs to); ``options`` go to the executor (``unit_timeout_s``). Ray
    is imported here, only when asked for.

    Raises:
        RayUnavailableError: Ray is not installed (``pip install "actsteer[ray]"``).
    """
    try:
        from actsteer.ray_executor import RayExecutor
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "ray":
            raise
        raise RayUnavailableError(f"--executor ray needs Ray, which is not installed: "
                                  f"{RAY_EXTRA}") from None
    return RayExecutor(spec, workers=workers, address=address, **options)
