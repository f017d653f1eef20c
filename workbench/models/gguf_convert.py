"""Convert a GGUF file to a safetensors folder: `python -m workbench.models.gguf_convert FILE OUT`.

Run as a child process by `sources.converted_gguf`, so that cancelling kills it outright and a
crash inside the GGUF reader cannot take the app down. Errors end as one line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported


def convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    # dequantize=True unpacks every block into plain tensors, which can be saved and trained.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # The GGUF load leaves quant_method=gguf in the config; transformers refuses to train such a model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: python -m workbench.models.gguf_convert FILE.gguf OUT_DIR", file=sys.stderr)
        return 2
    try:
        convert(Path(sys.argv[1]), Path(sys.argv[2]))
    except Exception as error:  # noqa: BLE001 - reported as one line to the parent process
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"{type(error).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
