"""The models benchmarks/llm.py measures, each built once into benchmarks/work/llm/ by a fresh process
(its wall time and peak RSS recorded in builds.json beside them):

- float: Gemma-3-270M's float32 IR, compress's openvino exporter (stateful, for openvino-genai);
- compress int8 / int4-rtn / int4-awq: `compress quantize` (the checkpoint), then the openvino export
  (timed apart: the IR conversion and its check against torch are not compression);
- nncf-*: `nncf.compress_weights` on the float IR, as optimum-intel users get it (their
  `--weight-format int4` is INT4_ASYM group 128 ratio 1; `int8` is INT8_ASYM), saved as an IR.
Delete a folder (and its builds.json entry goes stale) to rebuild it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from common import WORK, gemma_path, run_measured

LLM = WORK / "llm"
RECORDS = LLM / "builds.json"
AWQ_CALIB = ["--calib", "wiki-train", "--calib-samples", "8", "--calib-seq-len", "256"]
INT8_HEAD = ["--embeddings", "--keep-int8", "model.embed_tokens"]  # the tied table and output head: INT8
COMPRESS = {
    "int8": ["--scheme", "int8", "--embeddings"],
    "int4-rtn": ["--scheme", "int4", *INT8_HEAD],
    "int4-awq": ["--scheme", "int4", "--method", "awq", *AWQ_CALIB, *INT8_HEAD],
}
NNCF = {  # name -> (mode, group size)
    "nncf-int8": ("INT8_ASYM", None),
    "nncf-int4-asym": ("INT4_ASYM", 128),
    "nncf-int4-sym": ("INT4_SYM", 128),
}
IR = "openvino_model.xml"
# A build times the whole quantization: no cached pass results reused, nothing added to the history.
QUIET = ["--no-eval", "--no-cache", "--no-history", "-q"]


def ir_of(name: str) -> Path:
    """The IR of a built model: compress's in its checkpoint folder, the others in their own."""
    return LLM / name / ("openvino" if name in COMPRESS else "") / IR


def checkpoint_of(name: str) -> Path:
    return gemma_path().parent if name == "float" else LLM / name


def python(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); {code}"]


def build_all() -> dict:
    """Every model built (those missing only); {name: {step: {seconds, peak_rss_gb}}}."""
    records = json.loads(RECORDS.read_text()) if RECORDS.is_file() else {}
    LLM.mkdir(parents=True, exist_ok=True)

    def record(name: str, step: str, args: list[str]) -> None:
        seconds, peak = run_measured(args)
        records.setdefault(name, {})[step] = {"seconds": seconds, "peak_rss_gb": peak}
        RECORDS.write_text(json.dumps(records, indent=2))
        print(f"built {name} ({step}) in {seconds:.0f} s, peak RSS {peak:.2f} GB", flush=True)

    if not ir_of("float").is_file():
        record(
            "float",
            "export",
            python(f"from llm_build import export_float; export_float({str(LLM / 'float')!r})"),
        )
    for name, args in COMPRESS.items():
        folder = LLM / name
        if not (folder / "model.safetensors").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            cli = python("from compress.cli import main; sys.argv[0] = 'compress'; main()")
            record(
                name,
                "quantize",
                [*cli, "quantize", str(gemma_path().parent), *args, "-o", str(folder), *QUIET],
            )
        if not ir_of(name).is_file():
            code = (
                "from compress.exporters import export_config_from_dict as c, run_exports as r; "
                f"r({str(folder)!r}, [c('openvino')])"
            )
            record(name, "export", python(code))
    for name in NNCF:
        if not ir_of(name).is_file():
            record(name, "compress_weights", [sys.executable, __file__, "--nncf", name])
    return records


def export_float(out: str) -> None:
    import compress as cz
    from compress.openvino.llm import export_llm_ir

    export_llm_ir(cz.load(gemma_path()), Path(out))


def nncf_worker(name: str) -> None:
    """nncf.compress_weights on the float IR, saved beside the tokenizer IRs (LLMPipeline loads it);
    the call's own seconds go into the folder's nncf.json."""
    import nncf
    import openvino as ov

    mode, group = NNCF[name]
    model = ov.Core().read_model(str(ir_of("float")))
    started = time.perf_counter()
    kwargs = {"group_size": group, "ratio": 1.0} if group else {}
    model = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode), **kwargs)
    seconds = time.perf_counter() - started
    out = LLM / name
    staging = LLM / f"{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ov.save_model(model, str(staging / IR), compress_to_fp16=False)
    for side in (LLM / "float").iterdir():
        if not side.name.startswith("openvino_model."):
            shutil.copy2(side, staging / side.name)
    settings = {"mode": mode, "group_size": group, "ratio": 1.0 if group else None, "nncf": nncf.__version__}
    (staging / "nncf.json").write_text(json.dumps({"compress_weights_seconds": seconds, **settings}))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--nncf"]:
        nncf_worker(sys.argv[2])
    else:
        print(json.dumps(build_all(), indent=2))
