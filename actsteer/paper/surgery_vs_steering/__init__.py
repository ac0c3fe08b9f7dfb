"""Model Surgery against activation steering, on equal terms: a study built on the method
(:mod:`actsteer.surgery`) and on steering, not part of either.

* :mod:`~actsteer.paper.surgery_vs_steering.arms` — the arms of one behaviour: steering
  with the probe's direction and with a CAA vector, the surgery edit, a random-direction
  control;
* :mod:`~actsteer.paper.surgery_vs_steering.matching` — the matched-effect rule;
* :mod:`~actsteer.paper.surgery_vs_steering.compare` — every arm measured on the same
  items (:func:`compare`), with its result types in
  :mod:`~actsteer.paper.surgery_vs_steering.comparison`;
* :mod:`~actsteer.paper.surgery_vs_steering.figures` — effect against its cost;
* :mod:`~actsteer.paper.surgery_vs_steering.study` — the study over behaviours and
  directions, one results-log cell each, resumable (:func:`run_study`).
"""

from actsteer.paper.surgery_vs_steering.compare import compare
from actsteer.paper.surgery_vs_steering.comparison import Comparison, Row
from actsteer.paper.surgery_vs_steering.study import StudySettings, run_study

__all__ = ["Comparison", "Row", "StudySettings", "compare", "run_study"]
