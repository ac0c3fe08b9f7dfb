"""The paper's question on behaviours the model expresses in its own text.

Does one combined vector steer several behaviours, or do vectors injected at their own layers
in the same pass (simultaneous) do better? On the embedded model the paper's A/B behaviours
do not steer at all (see :mod:`actsteer.paper.multi_behaviour`), so the question is put to
behaviours it does express: sentiment, a topic, a language (built in, see
:mod:`actsteer.data.expressed`), measured by word-set likelihoods after neutral prompts, with
every strength a fraction of the residual norm and the plans built so that each difference
(layers, coefficients) is isolated (:mod:`~actsteer.paper.multi_behaviour.expressed.plans`).
Beside steering, each behaviour's instruction is given in a chat scaffold, so the report says
whether steering beats just asking the model
(:mod:`~actsteer.paper.multi_behaviour.expressed.prompting`).

Example::

    from actsteer.paper.multi_behaviour import expressed
    config = expressed.ExpressedConfig(out_dir="/tmp/expressed")
    results = expressed.run(config)
    print(expressed.summary_table(results))
"""

from actsteer.paper.multi_behaviour.expressed.config import (
    COMBINED_RECIPES,
    KIND,
    ExpressedConfig,
)
from actsteer.paper.multi_behaviour.expressed.report import summary_table
from actsteer.paper.multi_behaviour.expressed.stages import RESULTS_FILE, run

__all__ = ["COMBINED_RECIPES", "KIND", "RESULTS_FILE", "ExpressedConfig", "run",
           "summary_table"]
