"""Evaluation backends: ``hf`` (transformers), ``openai`` (any OpenAI-compatible server), ``vllm`` (optional)."""

from __future__ import annotations

from cotdistill.errors import CotdistillError
from cotdistill.evaluate.backends.base import EvalBackend, EvalOutput, EvalRequest

BACKENDS = ("hf", "openai", "vllm")


def make_eval_backend(name: str, model: str, *, adapter: str | None = None, dtype: str = "auto",
                      batch_size: int = 8, base_url: str | None = None, api_key_env: str | None = None,
                      **kwargs) -> EvalBackend:
    """Build backend ``name`` for ``model``. For ``openai``, ``batch_size`` bounds the requests in flight."""
    if name == "hf":
        from cotdistill.evaluate.backends.hf import HFBackend

        return HFBackend(model, adapter=adapter, dtype=dtype, batch_size=batch_size, **kwargs)
    if name == "openai":
        from cotdistill.evaluate.backends.openai_backend import OpenAIEvalBackend

        if adapter:
            raise CotdistillError("adapter: the openai backend cannot apply an adapter; serve the adapted model instead")
        return OpenAIEvalBackend(model, base_url=base_url, api_key_env=api_key_env, max_concurrency=batch_size, **kwargs)
    if name == "vllm":
        from cotdistill.evaluate.backends.vllm import VLLMEvalBackend

        return VLLMEvalBackend(model, adapter=adapter, dtype=dtype, **kwargs)
    raise CotdistillError(f"backend: unknown backend '{name}' (choose one of {', '.join(BACKENDS)})")


def describe_backend(name: str, model: str, *, adapter: str | None = None, dtype: str = "auto",
                     base_url: str | None = None) -> dict:
    """The provenance a backend will report, computed without loading a model (for resume checks).

    Raises the same one-line errors as building the backend would (bad model path, missing vllm, ...).
    """
    if name == "hf":
        from cotdistill.models import describe_model

        prov = describe_model(model, dtype=dtype, adapter=adapter)
        prov.pop("resolved_path", None)
        return prov
    if name == "openai":
        if not base_url:
            raise CotdistillError("base_url: the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if adapter:
            raise CotdistillError("adapter: the openai backend cannot apply an adapter; serve the adapted model instead")
        return {"model": model, "model_sha": None, "adapter": None, "adapter_sha": None,
                "chat_template_sha": None, "dtype": "server", "base_url": base_url.rstrip("/")}
    if name == "vllm":
        from cotdistill.evaluate.backends.vllm import import_vllm

        vllm_module = import_vllm()  # not `vllm`: in this package that name is the backends.vllm submodule
        from cotdistill.models import describe_model

        prov = describe_model(model, adapter=adapter, device="cuda")
        prov.pop("resolved_path", None)
        prov["dtype"] = dtype
        prov["vllm_version"] = vllm_module.__version__
        return prov
    raise CotdistillError(f"backend: unknown backend '{name}' (choose one of {', '.join(BACKENDS)})")


__all__ = ["describe_backend", "BACKENDS", "EvalBackend", "EvalOutput", "EvalRequest", "make_eval_backend"]
