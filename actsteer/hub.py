"""The one gate to the Hugging Face Hub: offline mode, reachability, clear errors.

Everything in actsteer that may touch the Hub (Llama 2 weights, behaviour files of
``Anthropic/model-written-evals``, streamed Pile / codeparrot corpora) asks here first,
so that on a machine without network it fails within seconds, with one line that says
what was wanted, why it cannot be had, and what to do instead:

* offline mode (``HF_HUB_OFFLINE``, and ``HF_DATASETS_OFFLINE`` for dataset repos) is
  honoured before any connection is tried;
* the endpoint (``$HF_ENDPOINT``, default ``https://huggingface.co``) must answer within a
  timeout, enforced on the wall clock (a hung DNS lookup cannot stall the caller);
* failures raise :class:`HubUnavailableError` (or a subclass the caller names, such as
  :class:`actsteer.models.ModelUnavailableError`).

Example::

    try:
        path = fetch_file("Anthropic/model-written-evals", "persona/x.jsonl",
                          repo_type="dataset", instead="pass a local file")
    except HubUnavailableError as error:
        print(error)     # one line: what, why, what to do instead
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from actsteer.errors import ActsteerError, InvalidValueError
from actsteer.paths import env_flag

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT_S",
    "HubUnavailableError",
    "cached_file",
    "check_access",
    "endpoint",
    "fetch_file",
    "fetch_snapshot",
    "offline_flag",
    "require_hub",
]

RepoType = Literal["model", "dataset"]
T = TypeVar("T")

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 5.0
"""Seconds the endpoint gets to answer before the Hub counts as unreachable."""


class HubUnavailableError(ActsteerError, RuntimeError):
    """The Hugging Face Hub cannot be used here (offline mode, no network, no access)."""


def endpoint() -> str:
    """The Hub's base URL: ``$HF_ENDPOINT`` without a trailing slash, else the public Hub."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/") or DEFAULT_ENDPOINT


def offline_flag(repo_type: RepoType = "model") -> str | None:
    """The name of the offline variable that is on, or ``None`` when online use is allowed.

    ``HF_HUB_OFFLINE`` always counts; ``HF_DATASETS_OFFLINE`` counts for dataset repos
    (the ``datasets`` library reads it).
    """
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if repo_type == "dataset" else (
        "HF_HUB_OFFLINE",
    )
    return next((flag for flag in flags if env_flag(flag)), None)


def _within(timeout: float, fn: Callable[[], T]) -> T:
    """``fn()`` run in a daemon thread; ``TimeoutError`` if it has not returned in time.

    A daemon thread (not an executor) so that a call hung in DNS cannot hold up the
    interpreter at exit.
    """
    outcome: dict[str, T | BaseException] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target, name="actsteer-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _probe(url: str, timeout: float) -> str | None:
    """``None`` when ``url`` answers at all (any HTTP status), else why it did not."""

    def head() -> None:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            pass

    try:
        _within(timeout, head)
    except urllib.error.HTTPError:
        return None  # it answered, even if with an error status
    except urllib.error.URLError as error:
        return str(error.reason)
    except (OSError, ValueError) as error:  # TimeoutError is an OSError
        return str(error) or type(error).__name__
    return None


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise InvalidValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def require_hub(
    action: str,
    *,
    instead: str,
    repo_type: RepoType = "model",
    timeout: float = DEFAULT_TIMEOUT_S,
    error: type[HubUnavailableError] = HubUnavailableError,
) -> str:
    """Return the Hub endpoint if it may be used and answers within ``timeout`` seconds.

    Args:
        action: What the caller wants, as a verb phrase for the message
            (``"stream 'codeparrot/codeparrot-clean'"``).
        instead: What the user can do instead, appended to the message.
        repo_type: ``"dataset"`` also honours ``HF_DATASETS_OFFLINE``.
        timeout: Seconds (wall clock) the endpoint gets to answer.
        error: The exception class to raise (a subclass names the caller's domain).

    Raises:
        HubUnavailableError: (or ``error``) in offline mode, or when the endpoint does not
            answer in time; the message is one line naming the flag or the endpoint.
    """
    _check_timeout(timeout)
    flag = offline_flag(repo_type)
    if flag is not None:
        raise error(f"cannot {action}: offline mode is on ({flag} is set); {instead}")
    url = endpoint()
    reason = _probe(url, timeout)
    if reason is not None:
        raise error(
            f"cannot reach the Hugging Face Hub at {url} within {timeout:g} s to {action} "
            f"({reason}); {instead}"
        )
    return url


def _hub_cache() -> str | None:
    # Read at call time: huggingface_hub reads HF_HUB_CACHE only once, at import.
    return os.environ.get("HF_HUB_CACHE") or None


def cached_file(repo_id: str, filename: str, *, repo_type: RepoType = "model") -> Path | None:
    """The local Hugging Face cache's copy of one Hub file, or ``None`` (no network used)."""
    import huggingface_hub  # deferred: slow import, only needed here

    found = huggingface_hub.try_to_load_from_cache(
        repo_id, filename, cache_dir=_hub_cache(), repo_type=repo_type
    )
    return Path(found) if isinstance(found, str) else None


def fetch_file(
    repo_id: str,
    filename: str,
    *,
    instead: str,
    repo_type: RepoType = "model",
    timeout: float = DEFAULT_TIMEOUT_S,
    error: type[HubUnavailableError] = HubUnavailableError,
) -> Path:
    """A local path of one Hub file: the cached copy in offline mode, else downloaded.

    Downloads go through ``huggingface_hub.hf_hub_download`` (so they land in the usual
    cache), after :func:`require_hub` has checked the endpoint answers.

    Raises:
        HubUnavailableError: (or ``error``) offline without a cached copy, Hub unreachable,
            or the download failed; one line, ending with ``instead``.
    """
    what = f"{repo_id}/{filename}"
    flag = offline_flag(repo_type)
    if flag is not None:
        cached = cached_file(repo_id, filename, repo_type=repo_type)
        if cached is None:
            raise error(
                f"cannot fetch {what}: offline mode is on ({flag} is set) and it is not in "
                f"the local Hugging Face cache; {instead}"
            )
        return cached
    url = require_hub(
        f"fetch {what}",
        instead=f"{instead}, or set HF_HUB_OFFLINE=1 to use a cached copy",
        repo_type=repo_type,
        timeout=timeout,
        error=error,
    )
    import huggingface_hub

    return _download(what, instead, error, lambda: huggingface_hub.hf_hub_download(
        repo_id, filename, repo_type=repo_type, cache_dir=_hub_cache(), endpoint=url,
        etag_timeout=timeout))


def fetch_snapshot(
    repo_id: str,
    patterns: Sequence[str],
    *,
    instead: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    error: type[HubUnavailableError] = HubUnavailableError,
) -> Path:
    """A local folder holding a model repo's files that match ``patterns`` (e.g. its config,
    tokenizer and safetensors shards): the cached snapshot in offline mode, else downloaded
    into the usual cache. Errors as :func:`fetch_file`."""
    import huggingface_hub

    what = f"{repo_id} ({', '.join(patterns)})"
    flag = offline_flag()
    if flag is not None:
        return _download(
            what, f"offline mode is on ({flag} is set) and the local Hugging Face cache lacks "
            f"them; {instead}", error,
            lambda: huggingface_hub.snapshot_download(
                repo_id, allow_patterns=list(patterns), cache_dir=_hub_cache(),
                local_files_only=True))
    url = require_hub(f"fetch {what}", instead=instead, timeout=timeout, error=error)
    return _download(what, instead, error, lambda: huggingface_hub.snapshot_download(
        repo_id, allow_patterns=list(patterns), cache_dir=_hub_cache(), endpoint=url,
        etag_timeout=timeout))


def _download(what: str, instead: str, error: type[HubUnavailableError],
              fetch: Callable[[], str]) -> Path:
    try:
        return Path(fetch())
    except Exception as exc:  # Hub errors vary by version; report one clear line
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise error(
            f"could not get {what} ({type(exc).__name__}: {detail}); {instead}"
        ) from None


def check_access(
    repo_id: str,
    *,
    instead: str,
    timeout: float = 10.0,
    error: type[HubUnavailableError] = HubUnavailableError,
) -> None:
    """Fail within ``timeout`` seconds, naming the missing piece, if ``repo_id`` cannot be had.

    Passes at once when the repo's ``config.json`` is in the local cache (the weights may
    be there too; the loader decides). Otherwise checks offline mode and reachability
    (:func:`require_hub`), then asks the Hub whether ``$HF_TOKEN`` may read the repo, so a
    gated model (Llama 2) without an accepted licence or token is reported as such.
    """
    _check_timeout(timeout)
    if cached_file(repo_id, "config.json") is not None:
        return
    require_hub(
        f"get {repo_id} (not in the local Hugging Face cache)",
        instead=instead,
        timeout=timeout,
        error=error,
    )
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    token = os.environ.get("HF_TOKEN") or None
    try:
        _within(timeout, lambda: huggingface_hub.auth_check(repo_id, token=token))
    except TimeoutError:
        raise error(
            f"the Hugging Face Hub did not answer within {timeout:g} s for {repo_id}; {instead}"
        ) from None
    except GatedRepoError:
        raise error(
            f"{repo_id} is gated: accept its licence on {endpoint()}/{repo_id} and set "
            "HF_TOKEN to a token of the account that accepted it"
            + ("" if token else " (HF_TOKEN is not set)")
        ) from None
    except RepositoryNotFoundError:
        raise error(
            f"{repo_id} was not found on the Hub (or HF_TOKEN lacks access); check the name"
        ) from None
    except Exception as exc:  # network failures come from several HTTP stacks
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise error(
            f"cannot use the Hugging Face Hub for {repo_id} ({type(exc).__name__}: {detail}); "
            f"{instead}"
        ) from None
