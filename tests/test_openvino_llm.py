"""The OpenVINO export of a causal LM: a stateful IR (KV cache as state) on the checkpoint's own
integers, that decodes token by token as compress's torch model does and that openvino-genai loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.cli import main
from compress.kernels import stored_arithmetic
from compress.openvino import IR_DIR, IR_NAME, compile_model, precisions
from compress.openvino.core import core
from compress.openvino.generate import OvDecoder
from compress.qmodules import QuantEmbedding, QuantLinear, _QuantizedWeight

PROMPTS = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [20, 30, 40, 50, 60, 70, 80]])
NEW = 16
LINEARS = 14  # 2 layers x (q, k, v, o, gate, up, down); the tied output head comes on top
SCHEMES = {
    "int4-sym+int4-emb": ["--scheme", "int4", "--group-size", "16", "--embeddings"],
    "int4-asym+int8-emb": [
        "--scheme",
        "int4",
        "--group-size",
        "32",
        "--asymmetric",
        "--embeddings",
        "--keep-int8",
        "model.embed_tokens",
    ],
    "int8": ["--scheme", "int8", "--embeddings"],
}


@pytest.fixture(scope="module")
def lively_llama(tmp_path_factory) -> Path:
    """The tiny Llama with larger initial weights: its greedy decoding varies (the default one repeats
    the prompt's last token, so equal tokens would prove little)."""
    from compress.testing import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("lively") / "llama", initializer_range=0.2).parent


def quantize(source: Path, out: Path, *args: str) -> CliRunner:
    return CliRunner().invoke(main, ["quantize", str(source), *args, "-o", str(out), "--no-eval", "-q"])


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def exported(request, lively_llama, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(request.param) / "model"
    result = quantize(lively_llama, out, *SCHEMES[request.param], "--export", "openvino")
    assert result.exit_code == 0, result.output
    return out


def torch_greedy(module, prompts: torch.Tensor, new: int) -> np.ndarray:
    """torch's greedy tokens in the stored arithmetic (the CPU kernels' bfloat16 could flip a tie)."""
    with torch.inference_mode(), stored_arithmetic():
        out = module.generate(
            prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
        )
    return out[:, prompts.shape[1] :].numpy()


def test_stateful_ir_decodes_the_torch_models_tokens(exported):
    model = cz.load(exported)
    want = torch_greedy(model.module, PROMPTS, NEW)
    assert len({tuple(row) for row in want}) > 1 and len(set(want[0])) > 3  # a decoding worth comparing
    result = OvDecoder(exported).generate(PROMPTS, NEW)
    assert (result.tokens == want).all()
    assert result.first_token_s > 0 and len(result.step_s) == NEW - 1 and result.decode_tokens_per_s > 0


def test_ir_holds_the_checkpoints_integers_and_runs_compressed_kernels(exported):
    import openvino as ov

    model = cz.load(exported)
    xml = exported / IR_DIR / IR_NAME
    ir = core().read_model(str(xml))
    constants = {}
    for op in ir.get_ops():
        if op.get_type_name() == "Constant":
            kind = op.get_element_type().get_type_name()
            constants.setdefault(kind, set()).add(bytes(memoryview(op.get_data()).cast("B")))
    stored = {id(m.weight): m.qweight for m in model.module.modules() if isinstance(m, _QuantizedWeight)}
    for qt in stored.values():  # codes, zero points and scales as the checkpoint stores them
        codes = "i8" if qt.scheme == "int8" else "u4"
        assert qt.data.numpy().tobytes() in constants[codes]
        if qt.zero is not None:
            assert qt.zero.numpy().tobytes() in constants["u4"]
        scales = qt.scale.numpy()
        assert scales.tobytes() in constants["f16" if scales.dtype == np.float16 else "f32"]
    floats = [
        op
        for op in ir.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32
        for qt in stored.values()
        if list(op.get_output_shape(0)) == list(qt.shape)
    ]
    assert not floats  # no float copy of a quantized weight is left
    counts = precisions(compile_model(xml))
    linears = [m for m in model.module.modules() if isinstance(m, QuantLinear)]
    int4 = sum(m.scheme == "int4" for m in linears)
    assert counts.get("f32/u4", 0) == int4 and counts.get("f32/i8", 0) == len(linears) - int4
    tables = [m for m in model.module.modules() if isinstance(m, QuantEmbedding)]
    assert len(linears) == LINEARS + len(tables)  # with a quantized table, the tied output head too
    gathers = [  # the embedding lookup reads the stored integer table (OpenVINO's compressed Gather)
        op.input(0).get_element_type().get_type_name()
        for op in compile_model(xml).get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Gather" and op.get_input_size() >= 4
    ]
    assert gathers == [t.qweight.scheme.replace("int", "i").replace("i4", "u4") for t in tables]


def test_openvino_genai_loads_the_folder(exported):
    genai = pytest.importorskip("openvino_genai")
    import openvino as ov

    folder = exported / IR_DIR
    assert (folder / "openvino_tokenizer.xml").is_file() and (folder / "openvino_detokenizer.xml").is_file()
    pipe = genai.LLMPipeline(str(folder), "CPU", INFERENCE_PRECISION_HINT="f32")
    config = genai.GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    want = torch_greedy(cz.load(exported).module, PROMPTS, NEW)
    for row, expected in zip(PROMPTS, want, strict=True):
        assert pipe.generate(ov.Tensor(row[None].numpy()), config).tokens[0] == list(expected)
    assert isinstance(pipe.generate("the report", config), str)  # its own tokenizer IRs run


def test_perplexity_through_the_ir_matches_torch(exported):
    from compress.openvino.module import OvModule

    model = cz.load(exported)
    module = OvModule(compile_model(exported / IR_DIR / IR_NAME))
    ids = PROMPTS.repeat(1, 3)
    with torch.inference_mode(), stored_arithmetic():
        want = model.module(input_ids=ids).logits
    assert torch.allclose(module(input_ids=ids).logits, want, atol=1e-4, rtol=1e-4)
    assert torch.allclose(module(input_ids=ids[:1]).logits, want[:1], atol=1e-4, rtol=1e-4)  # state reset


def test_float_causal_lm_exports_and_decodes(lively_llama, tmp_path):
    import shutil

    from compress.exporters import export_config_from_dict, run_exports

    folder = tmp_path / "float"
    shutil.copytree(lively_llama, folder)
    run_exports(folder, [export_config_from_dict("openvino")])
    want = torch_greedy(cz.load(folder).module, PROMPTS, NEW)
    assert (OvDecoder(folder).generate(PROMPTS, NEW).tokens == want).all()
    assert set(precisions(compile_model(folder / IR_DIR / IR_NAME))) == {"f32"}


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_quantized_activations_are_refused_before_any_pass(tiny_llama, tmp_path, activations):
    out = tmp_path / "out"
    result = quantize(tiny_llama.parent, out, "--activations", activations, "--export", "openvino")
    assert result.exit_code == 2
    assert "weight-only" in result.output and f"not {activations} activations" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_int8_weight_only_is_held_for_a_causal_lm_and_refused_for_an_encoder(tiny_llama, tiny_bert, tmp_path):
    from compress.errors import BadInput
    from compress.exporters import check_exports, export_config_from_dict

    steps, passes = [export_config_from_dict("openvino")], [cz.Quantize(scheme="int8")]
    check_exports(steps, passes, "causal-lm")
    with pytest.raises(BadInput, match="weight-only INT8"):
        check_exports(steps, passes, "encoder")
    result = quantize(tiny_bert.parent, tmp_path / "bert-int8", "--export", "openvino")
    assert result.exit_code == 2 and not (tmp_path / "bert-int8").exists()


def test_the_evaluator_runs_the_stateful_ir(exported, lively_llama):
    from compress.eval.latency import LatencySettings

    quick = LatencySettings(batch_size=2, seq_len=16, warmup=1, min_rounds=2, max_rounds=3, budget_s=0.1)
    report = cz.evaluate(
        exported,
        lively_llama,
        runtimes=("openvino",),
        devices=("cpu",),
        latency=quick,
        task="fidelity",
        limit=8,
    )
    row = report.latency_row("cpu", "openvino")
    assert row is not None and row["status"] == "ok", row
    assert row["openvino"]["candidate"]["source"] == "ir"


def test_the_exporter_runs_as_the_first_import_of_a_process(tmp_path):
    """compress.onnx.samples imported first (as the exporter does in a fresh process) must not find
    compress.eval half-initialised (it imports that module from its package __init__)."""
    import subprocess
    import sys

    code = "from compress.onnx.samples import export_samples; import compress.exporters.openvino"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-500:]


def test_decoder_takes_a_model_converted_in_memory(exported):
    from compress.openvino.llm import convert_causal_lm

    model = cz.load(exported)
    ov_model, held = convert_causal_lm(model.module, model.config)
    decoder = OvDecoder(ov_model)
    assert decoder.sliced and decoder.path is None and held >= LINEARS
    assert (decoder.generate(PROMPTS, 8).tokens == torch_greedy(model.module, PROMPTS, 8)).all()
    assert {"beam_idx", "input_ids"} <= {i.get_any_name() for i in ov_model.inputs}  # the caller's, unchanged
    assert ov_model.output("logits").get_partial_shape()[1].is_dynamic  # not sliced to one position


def test_decoder_times_each_call_with_the_callers_clock(exported):
    ticks = iter(range(1000))
    decoder = OvDecoder(exported)
    result = decoder.generate(PROMPTS[:1], 4, clock=lambda: float(next(ticks)))
    # each call reads the clock twice: before the step and after the token is picked
    assert result.first_token_s == 1.0 and result.step_s == [1.0, 1.0, 1.0]
    assert result.decode_tokens_per_s == 1.0
