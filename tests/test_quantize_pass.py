"""The quantize pass on live modules: replacement, targets, ties, settings validation."""

from __future__ import annotations

import pytest
import torch

import compress as cz
from compress.errors import BadInput
from compress.passes.quantize import QuantizeConfig
from compress.qmodules import QuantEmbedding, QuantLinear
from compress.testing import assert_similar, tiny_mlp


def test_quantize_module_keeps_outputs_and_does_not_touch_the_original():
    mlp = tiny_mlp()
    before = [p.clone() for p in mlp.parameters()]
    x = torch.randn(4, 32)
    art = cz.quantize(mlp, scheme="int8")
    q = art.model.module
    assert all(isinstance(q[i], QuantLinear) for i in (0, 2, 4))
    assert_similar(q(x), mlp(x), min_cosine=0.999)
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.parameters(), strict=True))
    assert set(art.changes) == {"0.weight", "2.weight", "4.weight"}
    assert all(c["sqnr_db"] > 30 for c in art.changes.values())


def test_int4_beats_nothing_but_stays_close():
    mlp = tiny_mlp()
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    q = cz.quantize(mlp, scheme="int4", group_size=16).model.module
    # measured 0.9971 here (0.994-0.997 over five input seeds); 30% noise on one layer's weights
    # gives 0.94-0.985 and zeroing it 0.76-0.86, so 0.99 separates rounding from a broken quantizer
    assert_similar(q(x), mlp(x), min_cosine=0.99)


def test_include_and_exclude_globs():
    art = cz.quantize(tiny_mlp(), exclude=("4",))
    assert set(art.changes) == {"0.weight", "2.weight"}
    art = cz.quantize(tiny_mlp(), include=("2",))
    assert set(art.changes) == {"2.weight"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include": ("decoder.*",)}, "target pattern 'decoder.\\*' matches no linear/embedding layer"),
        ({"exclude": ("nothing",)}, "exclude pattern 'nothing' matches no"),
        ({"include": ("0",), "exclude": ("0",)}, "select no layer"),
        ({"scheme": "int3"}, "unknown value 'int3'"),
        ({"scheme": "int4", "group_size": 24}, "not a power of two"),
        ({"scheme": "int4", "group_size": 64, "include": ("4",)}, "group size 64 does not divide the 64"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    mlp = tiny_mlp(width=96)  # rows of 32 and 96 columns
    if kwargs.get("group_size") == 64:
        kwargs = {**kwargs, "include": ("2",)}
        message = "group size 64 does not divide the 96"
    with pytest.raises(BadInput, match=message):
        cz.quantize(mlp, **kwargs)


def test_unknown_setting_lists_the_valid_ones():
    with pytest.raises(BadInput, match="unknown setting 'groupsize' \\(did you mean 'group_size'\\?\\)"):
        QuantizeConfig.from_dict({"groupsize": 32})
    with pytest.raises(BadInput, match="expected an integer"):
        QuantizeConfig.from_dict({"scheme": "int4", "group_size": "32"})
    with pytest.raises(BadInput, match="'group_size' applies to scheme int4"):
        QuantizeConfig.from_dict({"scheme": "int8", "group_size": 32})


def test_already_quantized_layer_is_refused():
    q = cz.quantize(tiny_mlp()).model.module
    with pytest.raises(BadInput, match="already quantized"):
        cz.quantize(q)


def test_tied_embedding_is_quantized_only_when_every_owner_is_targeted(tiny_llama):
    model = cz.load(tiny_llama)
    m = model.module
    assert m.lm_head.weight is m.model.embed_tokens.weight
    linear_only = cz.quantize(model, embeddings="float").model.module
    assert not isinstance(linear_only.lm_head, QuantLinear)
    assert not isinstance(linear_only.model.embed_tokens, QuantEmbedding)
    both = cz.quantize(cz.load(tiny_llama)).model.module  # the default: embedding tables too
    assert isinstance(both.lm_head, QuantLinear) and isinstance(both.model.embed_tokens, QuantEmbedding)
    assert both.lm_head.weight is both.model.embed_tokens.weight  # one stored copy
    ids = torch.randint(0, 50, (2, 12))
    assert_similar(both(input_ids=ids).logits, m(input_ids=ids).logits, min_cosine=0.995)


def test_int4_keeps_embedding_tables_at_int8_by_default(tiny_bert):
    """The default (as NNCF's INT4): Linear layers INT4, embedding tables INT8 per row."""
    q = cz.quantize(tiny_bert, "int4", group_size=16).model.module
    assert q.embeddings.word_embeddings.scheme == "int8"
    assert q.encoder.layer[0].attention.self.query.scheme == "int4"
    all_int4 = cz.quantize(tiny_bert, "int4", group_size=16, embeddings="int4").model.module
    assert all_int4.embeddings.word_embeddings.scheme == "int4"
    linear_only = cz.quantize(tiny_bert, "int4", group_size=16, embeddings="float").model.module
    assert not isinstance(linear_only.embeddings.word_embeddings, QuantEmbedding)
    assert isinstance(linear_only.encoder.layer[0].attention.self.query, QuantLinear)


def test_embeddings_option_values():
    from compress.api import quantize_recipe

    assert quantize_recipe("int4").passes[0].targets.types == ("linear", "embedding")
    assert quantize_recipe("int4").passes[0].embeddings == "int8"
    assert quantize_recipe("int4", embeddings=True).passes[0].embeddings == "int4"  # the pass's scheme
    assert quantize_recipe("int8").passes[0].targets.types == ("linear", "embedding")
    assert quantize_recipe("int8", embeddings="float").passes[0].targets.types == ("linear",)
    with pytest.raises(BadInput, match="needs scheme int4"):
        quantize_recipe("int8", embeddings="int4")


def test_int4_method_auto_is_awq_for_a_causal_lm_and_rtn_otherwise(tiny_llama, tiny_bert):
    from compress.api import quantize_recipe
    from compress.calibration import Calibration
    from compress.passes.quantize.config import AUTO_CALIBRATION, AwqConfig, Int4Config
    from compress.plan import plan_run

    recipe = quantize_recipe("int4")
    assert recipe.passes[0].method == "auto"
    llm = plan_run(recipe, tiny_llama, cache=None)
    cfg = llm.recipe.passes[0]  # the plan, the cache key and the output recipe name the method
    assert isinstance(cfg, AwqConfig) and cfg.calibration.data == "wiki-train"
    assert (cfg.calibration.samples, cfg.calibration.seq_len) == tuple(AUTO_CALIBRATION.values())
    assert any("method auto -> awq" in note for note in llm.notes)
    encoder = plan_run(recipe, tiny_bert, cache=None).recipe.passes[0]
    assert type(encoder) is Int4Config and encoder.method == "rtn"
    # Data the recipe names is kept; its amount is cut to auto's at most.
    mine = Calibration(data="mine.txt", samples=4, seq_len=1024, seed=3)
    resolved = Int4Config().resolve("causal-lm", mine)
    assert resolved.calibration == Calibration(data="mine.txt", samples=4, seq_len=256, seed=3)
    assert Int4Config(method="hqq").resolve("causal-lm") == Int4Config(method="hqq")
    assert Int4Config().resolve(None).method == "rtn"
