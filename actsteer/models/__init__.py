"""Load a model whose residual stream is reachable through ``blocks.{L}.hook_resid_*``.

* :mod:`~actsteer.models.embedded`: the embedded SmolLM2-135M-Instruct (converted once
  from its GGUF file into the cache) and a tiny random Llama for fast tests;
* :mod:`~actsteer.models.loading`: :func:`load_model` on the ``hooked`` or ``bridge``
  backend, from the embedded model, a local folder or Llama 2 on the Hub;
* :mod:`~actsteer.models.info`: :func:`model_info`, the provenance vectors record;
* :mod:`~actsteer.models.source`: :func:`source_folder`, the Hugging Face folder a model
  was loaded from.

Example::

    import actsteer
    model = actsteer.load_model()            # embedded SmolLM2-135M, offline
    model.generate("Hello", max_new_tokens=5)
"""

from actsteer.models.embedded import (
    EMBEDDED_MODEL,
    embedded_model_path,
    embedded_tokenizer_path,
    tiny_model_folder,
)
from actsteer.models.info import (
    Backend,
    ModelInfo,
    ModelUnavailableError,
    SteerableModel,
    default_backend,
    model_info,
)
from actsteer.models.loading import LLAMA2_MODELS, load_model, quiet_deprecation, resolve_dtype
from actsteer.models.source import source_folder
from actsteer.paths import cache_dir

__all__ = [
    "EMBEDDED_MODEL",
    "LLAMA2_MODELS",
    "Backend",
    "ModelInfo",
    "ModelUnavailableError",
    "SteerableModel",
    "cache_dir",
    "default_backend",
    "embedded_model_path",
    "embedded_tokenizer_path",
    "load_model",
    "model_info",
    "quiet_deprecation",
    "resolve_dtype",
    "source_folder",
    "tiny_model_folder",
]
