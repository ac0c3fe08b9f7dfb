"""actsteer's layers, bottom to top: a module imports only from its own layer or below.

Read bottom up, the list is the data flow: value types and helpers; models and data; the
executor seam (units of work and the registry of tasks, which the computations below it
register with); vectors and plans; the steering engine (hooks, the shared-prefix sweep,
generation, baking, plans run as units); measurement; methods built on all of that
(surgery, learned vectors) and executors that run units elsewhere (Ray); the public API;
the paper's experiments and the harness; the command line. ``tests/test_layers.py`` parses
every module's imports (top-level, in functions, ``import_module`` strings) and holds the
package to this order, with no cycles.
"""

from __future__ import annotations

from actsteer.errors import MissingKeyError

__all__ = ["LAYERS", "layer_of"]

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("values and helpers", (
        "actsteer._version", "actsteer.errors", "actsteer.layers", "actsteer.atomic",
        "actsteer.paths", "actsteer.progress", "actsteer.hub", "actsteer.sites",
        "actsteer.stats", "actsteer.batching", "actsteer.aggregators",
        "actsteer.diagnostics", "actsteer.contrast", "actsteer.prompts", "actsteer.results",
        "actsteer.report_table")),
    ("models and data", ("actsteer.models", "actsteer.data")),
    ("executor seam", ("actsteer.executor",)),
    ("vectors and plans", (
        "actsteer.vector_meta", "actsteer.vector", "actsteer.norms", "actsteer.operators",
        "actsteer.plan", "actsteer.projection", "actsteer.controlvector",
        "actsteer.extraction")),
    ("steering engine", (
        "actsteer.steering", "actsteer.sweep", "actsteer.generation", "actsteer.writers",
        "actsteer.baking",
        "actsteer.units", "actsteer.positions", "actsteer.plain_decoding")),
    ("measurement", (
        "actsteer.evaluation", "actsteer.likelihood", "actsteer.accuracy", "actsteer.effects",
        "actsteer.steerability", "actsteer.layer_choice", "actsteer.figures")),
    ("methods and executors", (
        "actsteer.surgery", "actsteer.learned_objective", "actsteer.learned_checkpoint",
        "actsteer.learned", "actsteer.ray_executor")),
    ("public API", ("actsteer",)),
    ("paper", ("actsteer.paper", "actsteer.harness")),
    ("command line", ("actsteer.cli",)),
)
"""(layer name, the modules and packages in it), bottom first. A package entry covers its
submodules; the root package ``actsteer`` covers only its ``__init__``."""


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module`` (a dotted name inside actsteer), by the
    longest entry that is it or a package holding it.

    Raises:
        MissingKeyError: no layer declares ``module``; add it to :data:`LAYERS`.
    """
    best, found = -1, -1
    for index, (_, members) in enumerate(LAYERS):
        for entry in members:
            covers = module == entry or (entry != "actsteer" and module.startswith(entry + "."))
            if covers and len(entry) > best:
                best, found = len(entry), index
    if found < 0:
        raise MissingKeyError(f"module {module!r} is in no layer of actsteer.layers.LAYERS; "
                              "add it to the layer it belongs to")
    return found
