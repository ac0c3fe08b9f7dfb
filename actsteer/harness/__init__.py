"""A harness in the AxBench protocol (Wu et al. 2025) with local scorers.

Per behaviour, greedy generations for everyday instructions under each method (steering at
a ladder of strengths, prompting, both) are scored for the concept, the relevance to the
instruction and the fluency, each mapped to 0-2 and combined by AxBench's harmonic mean;
the strength is chosen on one half of the instructions and reported on the other, beside a
detection axis (the vector's held-out ROC-AUC). Labelled "AxBench protocol, local scorers:
not comparable to the leaderboard". Protocol, mappings and command: ``docs/harness.md``.

Example::

    from actsteer import harness
    results = harness.run(harness.profile("quick"))      # sentiment, 8 instructions
    print(harness.table(results))
"""

from actsteer.harness.config import PROFILES, HarnessConfig, profile
from actsteer.harness.figures import write_figures
from actsteer.harness.methods import METHODS, Intervention, Method, MethodContext
from actsteer.harness.report import LABEL, HarnessTable, table
from actsteer.harness.run import RESULTS_FILE, run

__all__ = ["LABEL", "METHODS", "PROFILES", "RESULTS_FILE", "HarnessConfig", "HarnessTable",
           "Intervention", "Method", "MethodContext", "profile", "run", "table",
           "write_figures"]
