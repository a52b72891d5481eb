"""Schemes bf16 and fp16: weights stored in 16 bits, layers computing in 16 bits, norms as float32
islands; the same file whichever road wrote it; bad combinations refused with one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.checkpoint import SafetensorsFile
from compress.cli import main
from compress.errors import BadInput
from compress.formats import read_compression_info
from compress.passes.quantize.config import Float16Config, QuantizeConfig
from compress.precision import compute_dtype, openvino_precision_hint, stored_precision
from compress.qmodules import Float16Embedding, Float16Linear
from tests.conftest import file_digest
from tests.test_doors import assert_same_tensors, assert_same_values

DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ids(n: int = 3, length: int = 12) -> torch.Tensor:
    return torch.randint(5, 100, (n, length), generator=torch.Generator().manual_seed(0))


def outputs(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.module(input_ids=tokens, attention_mask=torch.ones_like(tokens))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).norm() / want.norm()).item()


def data_bytes(path: Path) -> dict[str, int]:
    file = SafetensorsFile(path)
    return {name: info.nbytes for name, info in file.tensors.items()}


# --- storage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["bf16", "fp16"])
def test_targeted_weights_are_stored_in_16_bits_and_nothing_else_changes(tiny_bert, tmp_path, scheme):
    before = file_digest(tiny_bert)
    result = cli("quantize", str(tiny_bert), "--scheme", scheme, "--embeddings", "-o", str(tmp_path / "o"),
                 "--no-eval", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "o" / "model.safetensors"
    file = SafetensorsFile(out)
    info = read_compression_info(file.metadata, str(out))
    code = {"bf16": "BF16", "fp16": "F16"}[scheme]
    for name, tensor in file.tensors.items():
        if len(tensor.shape) == 2:  # Linear and Embedding weights: targeted
            assert tensor.dtype == code, name
            assert info.tensors[name] == {"scheme": scheme, "shape": list(tensor.shape), "dtype": "float32"}
        else:  # biases and norms stay exact
            assert tensor.dtype == "F32" and name not in info.tensors, name
    halved = sum(t.numel * 2 for n, t in file.tensors.items() if n in info.tensors)
    assert sum(data_bytes(out).values()) == sum(data_bytes(tiny_bert).values()) - halved
    assert file_digest(tiny_bert) == before
    assert stored_precision(info) == scheme


def test_fp16_refuses_a_weight_beyond_its_range_and_leaves_nothing(tiny_bert, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_bert))
    tensors["encoder.layer.0.attention.self.query.weight"][0, 0] = 1e5
    save_file(tensors, str(tiny_bert))
    result = cli("quantize", str(tiny_bert), "--scheme", "fp16", "-o", str(tmp_path / "o"), "--no-eval", "-q")
    assert result.exit_code == 2
    assert "beyond float16's range" in result.stderr and "use scheme bf16" in result.stderr
    assert not (tmp_path / "o").exists()
    assert cz.quantize(tiny_bert, "bf16").changes  # bf16 holds float32's range


# --- loading and running ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["bf16", "fp16"])
def test_loads_back_as_a_16_bit_model_with_float32_norms(tiny_bert, tmp_path, scheme):
    cz.quantize(tiny_bert, scheme, embeddings=True).save(tmp_path / "o")
    model = cz.load(tmp_path / "o")
    query = model.module.get_submodule("encoder.layer.0.attention.self.query")
    assert isinstance(query, Float16Linear) and query.weight.dtype == DTYPE[scheme]
    assert query.bias.dtype == torch.float32  # stored exact, rounded at each call
    assert isinstance(model.module.embeddings.word_embeddings, Float16Embedding)
    assert model.module.embeddings.LayerNorm.weight.dtype == torch.float32
    assert compute_dtype(model.module) == DTYPE[scheme]
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, (args[0].dtype, out.dtype))  # returns None: the output is kept

        return hook

    # prepend: run before the island's own hook rounds the output back
    model.module.encoder.layer[0].attention.output.LayerNorm.register_forward_hook(
        record("norm"), prepend=True
    )
    query.register_forward_hook(record("query"))
    assert outputs(model, ids()).dtype == DTYPE[scheme]  # activations flow in 16 bits
    assert seen["query"] == (DTYPE[scheme], DTYPE[scheme])
    assert seen["norm"] == (torch.float32, torch.float32)  # inside the island: widened ...
    hidden = model.module.encoder.layer[0].attention.output(torch.zeros(1, 2, 64), torch.zeros(1, 2, 64))
    assert hidden.dtype == DTYPE[scheme]  # ... and rounded back on the way out


def test_outputs_are_within_16_bit_rounding_of_float(tiny_bert, tiny_llama):
    for source in (tiny_bert, tiny_llama):
        base = outputs(cz.load(source), ids())
        errors = {s: relative_error(outputs(cz.quantize(source, s, embeddings=True).model, ids()), base)
                  for s in ("bf16", "fp16")}  # fmt: skip
        # bf16 keeps 8 significant bits (relative rounding 2^-9), fp16 11 (2^-12), over a few layers
        assert 1e-4 < errors["bf16"] < 2e-2, (source, errors)
        assert errors["fp16"] < errors["bf16"] / 4, (source, errors)


def test_the_model_in_memory_computes_as_the_loaded_one(tiny_llama, tmp_path):
    artifact = cz.quantize(tiny_llama, "bf16", embeddings=True)
    artifact.save(tmp_path / "o")
    loaded = cz.load(tmp_path / "o")
    assert torch.equal(outputs(artifact.model, ids()), outputs(loaded, ids()))
    head = loaded.module.lm_head
    assert isinstance(head, Float16Linear)  # tied to the embedding table, stored once
    assert head.weight.data_ptr() == loaded.module.model.embed_tokens.weight.data_ptr()
    assert "lm_head.weight" not in SafetensorsFile(tmp_path / "o" / "model.safetensors").tensors


def test_the_cli_rounds_embeddings_by_default_for_16_bit_schemes(tiny_bert, tmp_path):
    """--scheme bf16 alone is the half-size file (embeddings too), as int8 stores them at INT8."""
    for scheme in ("bf16", "int8"):
        out = tmp_path / scheme
        result = cli("quantize", str(tiny_bert), "--scheme", scheme, "-o", str(out), "--no-eval", "-q")
        assert result.exit_code == 0, result.output
        table = SafetensorsFile(out / "model.safetensors").tensors["embeddings.word_embeddings.weight"]
        assert table.dtype == ("BF16" if scheme == "bf16" else "I8")
    table = "embeddings.word_embeddings.weight"
    assert table in cz.quantize(tiny_bert, "bf16").changes
    assert table not in cz.quantize(tiny_bert, "bf16", embeddings=False).changes


def test_layers_left_out_stay_float32_and_compute_in_float32(tiny_bert, tmp_path):
    out = tmp_path / "o"
    result = cli("quantize", str(tiny_bert), "--scheme", "bf16", "--embeddings", "float", "--exclude",
                 "pooler.dense", "-o", str(out), "--no-eval", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = SafetensorsFile(out / "model.safetensors").tensors
    assert stored["pooler.dense.weight"].dtype == "F32"
    assert stored["embeddings.word_embeddings.weight"].dtype == "F32"  # --embeddings float
    model = cz.load(out)
    seen = {}
    model.module.pooler.dense.register_forward_pre_hook(lambda m, a: seen.update(arg=a[0].dtype))
    with torch.inference_mode():
        pooled = model.module(input_ids=ids()).pooler_output
    assert seen["arg"] == torch.float32 and pooled.dtype == torch.bfloat16
    base = outputs(cz.load(tiny_bert), ids())
    assert relative_error(outputs(model, ids()), base) < 2e-2


def test_a_pruned_model_stores_its_16_bit_weights_sparse(tiny_bert, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\npasses:\n  - {kind: prune, pattern: unstructured, sparsity: 0.5}\n"
        "  - {kind: quantize, scheme: bf16}\n"
    )
    result = cli("run", str(recipe), str(tiny_bert), "-o", str(tmp_path / "o"), "--no-eval", "-q")
    assert result.exit_code == 0, result.output
    file = SafetensorsFile(tmp_path / "o" / "model.safetensors")
    meta = read_compression_info(file.metadata, "o").tensors["encoder.layer.0.intermediate.dense.weight"]
    assert meta["scheme"] == "sparse" and meta["inner"]["scheme"] == "bf16"
    assert file.tensors["encoder.layer.0.intermediate.dense.weight"].dtype == "BF16"
    dense = cz.load(tmp_path / "o").module.encoder.layer[0].intermediate.dense
    assert isinstance(dense, Float16Linear) and (dense.weight == 0).float().mean() >= 0.5


# --- roads and doors ---------------------------------------------------------------------------


def test_the_streaming_road_and_the_memory_road_write_the_same_file(tiny_llama, tmp_path):
    from compress.plan import plan_run

    recipe = cz.Recipe(passes=[QuantizeConfig.from_dict({"scheme": "bf16"})])
    assert plan_run(recipe, tiny_llama, tmp_path / "x", cache=None).steps[0].road == "stream"
    assert plan_run(recipe, tiny_llama, cache=None).steps[0].road == "memory"
    cli(
        "quantize",
        str(tiny_llama),
        "--scheme",
        "bf16",
        "--embeddings",
        "-o",
        str(tmp_path / "a"),
        "--no-eval",
        "-q",
    )
    cz.quantize(tiny_llama, "bf16", embeddings=True).save(tmp_path / "b")  # in memory
    for door, targets in (("c", ", targets: {types: [linear, embedding, conv]}"), ("d", "")):
        yaml = tmp_path / f"{door}.yaml"
        yaml.write_text(f"version: 1\npasses:\n  - {{kind: quantize, scheme: bf16{targets}}}\n")
        result = cli(
            "run", str(yaml), str(tiny_llama), "-o", str(tmp_path / door), "--no-eval", "--no-cache", "-q"
        )
        assert result.exit_code == 0, result.output
    folders = {door: tmp_path / door for door in "abc"}
    assert_same_tensors(folders)
    assert_same_values(folders, keys="all")
    assert_same_tensors({"a": tmp_path / "a", "d": tmp_path / "d"})  # a recipe's default: embeddings too


def test_settings_round_trip_and_describe_themselves():
    cfg = QuantizeConfig.from_dict({"scheme": "fp16", "targets": {"exclude": ["lm_head"]}})
    assert isinstance(cfg, Float16Config) and cfg.scheme == "fp16"
    assert cfg.targets.types == ("linear", "embedding", "conv")  # include/exclude alone keep the types
    assert QuantizeConfig.from_dict(cfg.to_dict()) == cfg
    assert Float16Config().targets.types == ("linear", "embedding", "conv")
    assert cz.Quantize(scheme="bf16").describe() == "bf16 weights and compute (linear, embedding, conv)"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--activations", "dynamic"], "needs scheme int8"),
        (["--group-size", "32"], "applies to scheme int4"),
        (["--method", "gptq"], "chooses INT4 codes"),
        (["--keep-int8", "x"], "applies to scheme int4"),
        (["--smooth", "0.5"], "applies to scheme int8"),
        (["--backend", "nncf"], "unknown value 'bf16'"),
        (["--export", "onnx"], "no ONNX Runtime form"),
    ],
)
def test_bad_combinations_get_one_sentence(tiny_bert, tmp_path, args, says):
    result = cli(
        "quantize", str(tiny_bert), "--scheme", "bf16", *args, "-o", str(tmp_path / "o"), "--no-eval", "-q"
    )
    assert result.exit_code == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


def test_a_recipe_with_a_setting_of_another_scheme_is_refused(tmp_path):
    with pytest.raises(BadInput, match=r"setting 'calibration' applies to .*not to scheme bf16/fp16"):
        QuantizeConfig.from_dict({"scheme": "bf16", "calibration": {"samples": 4}})


# --- ONNX and OpenVINO ------------------------------------------------------------------------


def test_fp16_exports_a_float16_onnx_graph_that_agrees_with_torch(tiny_bert, tmp_path):
    import onnx

    out = tmp_path / "o"
    result = cli("quantize", str(tiny_bert), "--scheme", "fp16", "--embeddings", "--export", "onnx",
                 "-o", str(out), "--no-eval", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(out / "model.onnx"))
    kinds = {onnx.TensorProto.DataType.Name(i.data_type) for i in graph.graph.initializer if len(i.dims) == 2}
    assert kinds == {"FLOAT16"}


def test_onnxruntime_rows_of_16_bit_candidates(tiny_bert, tmp_path):
    """bf16: unavailable with the reason; fp16: measured on a float16 graph."""
    from compress.eval import LatencySettings, evaluate

    quick = LatencySettings(batch_size=2, seq_len=16, warmup=1, min_rounds=2, max_rounds=2, budget_s=1)
    for scheme in ("bf16", "fp16"):
        candidate = cz.quantize(tiny_bert, scheme, embeddings=True)
        report = evaluate(candidate.model, tiny_bert, task="fidelity", limit=4, devices=("cpu",),
                          runtimes=("torch", "onnxruntime"), latency=quick, history=None)  # fmt: skip
        rows = {r["runtime"]: r for r in report.latency}
        assert rows["torch"]["status"] == "ok", rows["torch"]
        assert report.metric("accuracy.retention") > 0.99
        if scheme == "bf16":
            assert rows["onnxruntime"]["status"] == "unavailable"
            assert "no ONNX Runtime form" in rows["onnxruntime"]["reason"]
        else:
            assert rows["onnxruntime"]["status"] == "ok", rows["onnxruntime"]
            assert rows["onnxruntime"]["onnx"]["candidate"]["check_cosine_min"] > 0.999


def test_openvino_precision_hint_follows_the_checkpoint_and_the_cpu(tiny_bert, tmp_path):
    cz.quantize(tiny_bert, "bf16").save(tmp_path / "bf16")
    cz.quantize(tiny_bert, "fp16").save(tmp_path / "fp16")
    cz.quantize(tiny_bert, "int8").save(tmp_path / "int8")

    def info(name):
        path = tmp_path / name / "model.safetensors"
        return read_compression_info(SafetensorsFile(path).metadata, str(path))

    amx = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16"})
    avx2 = frozenset({"avx2"})
    assert openvino_precision_hint(info("bf16"), amx)[0] == "bf16"
    assert openvino_precision_hint(info("fp16"), amx)[0] == "f16"
    hint, why = openvino_precision_hint(info("bf16"), avx2)
    assert hint == "f32" and "amx_bf16" in why
    assert openvino_precision_hint(info("int8"), amx)[0] == "f32"
    assert openvino_precision_hint(None, amx)[0] == "f32"


def test_a_static_int8_graph_runs_its_float_parts_in_bf16_where_the_cpu_has_it(tiny_bert):
    """OpenVINO's default on a BF16 CPU, measured faster; a float baseline stays f32; without BF16
    the float parts stay f32."""
    pytest.importorskip("openvino")
    from compress.eval import LatencySettings, evaluate
    from compress.hardware import detect
    from compress.precision import precision_hint

    amx = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_int8"})
    assert precision_hint(None, amx, static_int8=True)[0] == "bf16"
    hint, why = precision_hint(None, frozenset({"avx2", "avx512_vnni"}), static_int8=True)
    assert hint == "f32" and "without BF16" in why
    quick = LatencySettings(batch_size=2, seq_len=16, warmup=1, min_rounds=2, max_rounds=2, budget_s=1)
    candidate = cz.quantize(tiny_bert, "int8", activations="static", data=ids())
    report = evaluate(candidate.model, tiny_bert, limit=8, devices=("cpu",), runtimes=("openvino",),
                      latency=quick, history=None)  # fmt: skip
    row = report.latency_row("cpu", "openvino")
    assert row["status"] == "ok", row
    want, _ = precision_hint(None, detect().cpu.features, static_int8=True)
    assert row["openvino"]["candidate"]["inference_precision"] == want
    assert row["openvino"]["baseline"]["inference_precision"] == "f32"
    assert any("u8/i8" in label for label in row["openvino_precisions"]["candidate"])


def test_openvino_rows_of_16_bit_candidates_use_the_16_bit_precision(tiny_bert):
    """OpenVINO runs the widened 16-bit weights with the precision the CPU has instructions for
    (bf16 on a BF16 CPU, else f32 with the reason), checked against torch and scored through it."""
    pytest.importorskip("openvino")
    from compress.eval import LatencySettings, evaluate
    from compress.hardware import detect
    from compress.precision import precision_hint

    quick = LatencySettings(batch_size=2, seq_len=16, warmup=1, min_rounds=2, max_rounds=2, budget_s=1)
    candidate = cz.quantize(tiny_bert, "bf16", embeddings=True)
    report = evaluate(candidate.model, tiny_bert, limit=8, devices=("cpu",), runtimes=("openvino",),
                      latency=quick, history=None)  # fmt: skip
    row = report.latency_row("cpu", "openvino")
    assert row["status"] == "ok", row
    want, _ = precision_hint("bf16", detect().cpu.features)
    assert row["openvino"]["candidate"]["inference_precision"] == want
    assert row["openvino"]["baseline"]["inference_precision"] == "f32"
    assert row["openvino"]["candidate"]["check_cosine_min"] >= 0.999
    if want == "bf16":  # the runtime graph says its matrix products take bf16 activations
        assert all(label.startswith("bf16") for label in row["openvino_precisions"]["candidate"])
    assert f"compiled with inference precision {want}" in " ".join(report.notes)
    through = report.accuracy.details["by_runtime"]["openvino"]
    assert through["status"] == "ok" and through["retention"] > 0.99


@pytest.mark.parametrize("scheme", ["bf16", "fp16"])
def test_openvino_ir_of_16_bit_models_agrees_with_torch(tiny_bert, tmp_path, scheme):
    """The IR stores 16-bit weights (exact), the checkpoint's size: fp16 as float16, bf16 as bfloat16
    constants converted to f32 where they are read."""
    pytest.importorskip("openvino")
    from compress.openvino import compile_model
    from compress.openvino.ir import IR_DIR, IR_NAME

    out = tmp_path / scheme
    result = cli("quantize", str(tiny_bert), "--scheme", scheme, "--embeddings", "--export", "openvino",
                 "-o", str(out), "--no-eval", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    xml = out / IR_DIR / IR_NAME
    model, tokens = cz.load(out), ids()
    feeds = {"input_ids": tokens.numpy(), "attention_mask": torch.ones_like(tokens).numpy()}
    got = torch.from_numpy(compile_model(xml).create_infer_request().infer(feeds)[0].copy())
    assert relative_error(got, outputs(model, tokens).float()) < 2e-2
    weights = xml.with_suffix(".bin").stat().st_size
    stored = (out / "model.safetensors").stat().st_size
    assert weights < 1.1 * stored  # 16-bit weights in the IR too (bf16: constants converted where read)


# --- CUDA (unmeasured here: no GPU on the machines this was written on) ------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("scheme", ["bf16", "fp16"])
def test_16_bit_models_run_on_cuda(tiny_bert, tmp_path, scheme):
    from compress.eval import LatencySettings, evaluate

    cz.quantize(tiny_bert, scheme, embeddings=True).save(tmp_path / "o")
    model, base = cz.load(tmp_path / "o"), cz.load(tiny_bert)
    tokens = ids().cuda()
    with torch.inference_mode():
        got = model.module.cuda()(input_ids=tokens).last_hidden_state
        want = base.module.cuda()(input_ids=tokens).last_hidden_state
    assert got.dtype == DTYPE[scheme] and got.device.type == "cuda"
    assert relative_error(got, want) < 2e-2
    model.module.cpu(), base.module.cpu()
    quick = LatencySettings(batch_size=2, seq_len=16, warmup=1, min_rounds=2, max_rounds=2, budget_s=1)
    report = evaluate(model, base, task="fidelity", limit=4, devices=("cuda",), runtimes=("torch",),
                      latency=quick, history=None)  # fmt: skip
    assert report.latency[0]["status"] == "ok", report.latency[0]
    assert json.dumps(report.latency[0])


def test_embeddings_at_another_integer_scheme_are_refused_in_one_sentence(tiny_bert, tmp_path):
    out = tmp_path / "o"
    result = cli("quantize", str(tiny_bert), "--scheme", "bf16", "--embeddings", "int8", "-o", str(out))
    assert result.exit_code == 2 and "needs scheme int4" in result.output and "alone" in result.output
    assert not out.exists()
