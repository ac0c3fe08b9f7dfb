"""The embedded model's post-attention RMSNorm weights (``ln2``, the ``g`` a folded-basis
surgery divides by), per layer, as JSON on stdout::

    python scripts/ln2_gains.py > docs/recorded/surgery_basis/ln2_gains.json
"""

from __future__ import annotations

import json
import sys

from safetensors import safe_open

from actsteer.models import source_folder


def main() -> None:
    folder = source_folder("smollm2-135m-instruct")
    out = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        n_layers = 1 + max(int(key.split(".")[2]) for key in handle.keys()  # noqa: SIM118
                           if key.startswith("model.layers."))
        for layer in range(n_layers):
            g = handle.get_tensor(f"model.layers.{layer}.post_attention_layernorm.weight")
            g = g.double()
            out[str(layer)] = {"median": float(g.median()), "min_abs": float(g.abs().min()),
                               "max": float(g.max()), "below_0.01": int((g.abs() < 0.01).sum())}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
