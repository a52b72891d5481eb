"""Structured pruning: the dependency analysis on an MLP, a CNN with a residual and transformers.

The reference for every pruned model is the masked original: the same model with the removed
units' consumer columns set to zero. The physically smaller model must give the same outputs, on
inputs other than the one the model was traced with.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

import compress as cz
from compress.errors import Unsupported
from compress.passes.prune import PruneConfig
from compress.passes.prune.structured import make_plan
from compress.registry import PassContext
from compress.testing import tiny_cnn, tiny_mlp


def plan_for(module, data=None, **settings):
    cfg = PruneConfig.from_dict({"sparsity": 0.5, **settings})
    plan, _ = make_plan(module, cfg, PassContext(data=data))
    return plan, cfg


def masked_and_pruned(module, plan, cfg):
    masked, pruned = copy.deepcopy(module), copy.deepcopy(module)
    plan.mask(masked)
    plan.apply(pruned, cfg)
    return masked, pruned


def outputs(module, x):
    with torch.inference_mode():
        out = module(**x) if isinstance(x, dict) else module(x)
    return getattr(out, "logits", None) if hasattr(out, "logits") else getattr(out, "last_hidden_state", out)


def test_mlp_neurons_shrink_and_match_the_masked_original():
    mlp = tiny_mlp()
    plan, cfg = plan_for(mlp, data=torch.randn(2, 32), pattern="neurons")
    assert sorted(g.label for g in plan.groups) == ["0", "2"]
    masked, pruned = masked_and_pruned(mlp, plan, cfg)
    assert pruned[0].weight.shape == (32, 32) and pruned[2].weight.shape == (32, 32)
    assert pruned[4].weight.shape == (8, 32) and pruned[0].out_features == 32
    x = torch.randn(5, 32)
    assert torch.allclose(outputs(pruned, x), outputs(masked, x), atol=1e-6)
    assert not torch.allclose(outputs(pruned, x), outputs(mlp, x), atol=1e-3)  # it did change


def test_cnn_residual_couples_both_convolutions_and_the_head():
    cnn = tiny_cnn()
    plan, cfg = plan_for(cnn, data=torch.randn(2, 1, 16, 16), pattern="channels")
    (group,) = plan.groups  # conv1 and conv2 feed the same residual sum: one group
    coupled = {(m.names[0], m.axis) for m in group.members}
    assert coupled >= {("conv1.weight", 0), ("conv2.weight", 0), ("conv2.weight", 1), ("head.weight", 1)}
    masked, pruned = masked_and_pruned(cnn, plan, cfg)
    assert pruned.conv1.out_channels == pruned.conv2.in_channels == pruned.conv2.out_channels == 8
    assert pruned.head.in_features == 8
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(outputs(pruned, x), outputs(masked, x), atol=1e-5)


def test_bert_heads_and_neurons_match_the_masked_original(tiny_bert):
    bert = cz.load(tiny_bert).module
    ids = torch.randint(5, 60, (3, 11))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for pattern, shape in (("heads", (32, 64)), ("neurons", (64, 64))):
        plan, cfg = plan_for(bert, pattern=pattern)
        assert len(plan.groups) == 2  # one per layer
        masked, pruned = masked_and_pruned(bert, plan, cfg)
        layer = pruned.encoder.layer[0]
        weight = layer.attention.self.query.weight if pattern == "heads" else layer.intermediate.dense.weight
        assert tuple(weight.shape) == shape
        assert torch.allclose(outputs(pruned, x), outputs(masked, x), atol=1e-5)


def test_llama_gated_mlp_and_grouped_query_heads(tiny_llama):
    llama = cz.load(tiny_llama).module
    ids = torch.randint(5, 60, (2, 9))
    plan, cfg = plan_for(llama, pattern="neurons")
    members = {m.names[0].split(".")[-2] for m in plan.groups[0].members}
    assert members == {"gate_proj", "up_proj", "down_proj"}  # gate and up meet in a product
    masked, pruned = masked_and_pruned(llama, plan, cfg)
    assert torch.allclose(outputs(pruned, ids), outputs(masked, ids), atol=1e-5)
    plan, cfg = plan_for(llama, pattern="heads")
    group = plan.groups[0]
    assert group.size == 2  # two key/value heads, each shared by two query heads: the unit
    masked, pruned = masked_and_pruned(llama, plan, cfg)
    attention = pruned.model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (32, 64) and attention.k_proj.weight.shape == (16, 64)
    assert torch.allclose(outputs(pruned, ids), outputs(masked, ids), atol=1e-5)


def test_uniform_pruning_rewrites_the_config_so_transformers_loads_it(tiny_llama, tmp_path):
    art = cz.prune(tiny_llama, "heads", 0.5)
    assert (art.config.num_attention_heads, art.config.num_key_value_heads) == (2, 1)
    art.save(tmp_path / "p")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "p").eval()  # no compress needed
    ids = torch.randint(5, 60, (1, 7))
    assert torch.allclose(outputs(plain, ids), outputs(art.model.module, ids), atol=1e-5)


def test_per_layer_sizes_are_declared_and_load_back(tiny_bert, tmp_path):
    art = cz.prune(tiny_bert, "neurons", 0.5, scope="global")
    sizes = [layer.intermediate.dense.out_features for layer in art.model.module.encoder.layer]
    art.save(tmp_path / "p")
    back = cz.load(tmp_path / "p")
    assert [layer.intermediate.dense.out_features for layer in back.module.encoder.layer] == sizes
    assert sum(sizes) == 128  # half of 2 x 128, spread by importance
    ids = torch.randint(5, 60, (2, 7))
    assert torch.equal(outputs(back.module, ids), outputs(art.model.module, ids))


def test_bert_heads_keep_the_config_and_declare_shapes(tiny_bert, tmp_path):
    art = cz.prune(tiny_bert, "heads", 0.5)
    assert art.config is None  # BERT derives its head size from the head count: it cannot change
    art.save(tmp_path / "p")
    back = cz.load(tmp_path / "p").module
    assert back.encoder.layer[1].attention.self.value.weight.shape == (32, 64)


def test_custom_module_loads_back_into_a_fresh_instance(tmp_path):
    art = cz.prune(tiny_cnn(), "channels", 0.5, data=torch.randn(2, 1, 16, 16))
    art.save(tmp_path / "cnn")
    back = cz.load(tmp_path / "cnn", module=tiny_cnn(seed=1)).module
    x = torch.randn(2, 1, 16, 16)
    assert back.conv2.weight.shape == (8, 8, 3, 3)
    assert torch.equal(outputs(back, x), outputs(art.model.module, x))


def kept_rows(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Which rows of `original` the pruned weight kept, in order."""
    return [next(i for i, row in enumerate(original) if torch.equal(row, kept)) for kept in pruned]


def test_activation_importance_uses_the_data():
    """README: `activation` scores a unit by its input norm x the weight norm of the layers that consume
    it. Worked out by hand for both hidden layers of the MLP and compared with what cz.prune kept."""
    mlp = tiny_mlp()
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    x[:, :3] *= 50  # the first inputs are large: the activation score must prefer their paths
    pruned = cz.prune(mlp, "neurons", 0.5, method="activation", data=x).model.module
    with torch.no_grad():
        h0 = torch.relu(mlp[0](x))  # the input of mlp[2], which consumes layer 0's neurons
        h2 = torch.relu(mlp[2](h0))  # the input of mlp[4]
    expected = []
    for h, consumer in ((h0, mlp[2]), (h2, mlp[4])):
        score = h.norm(dim=0) * consumer.weight.norm(dim=0)
        ranked = score.sort(descending=True).values
        assert ranked[31] > (1 + 1e-5) * ranked[32]  # no tie at the cut that float rounding could flip
        expected.append(sorted(score.argsort(descending=True)[:32].tolist()))
    keep0 = kept_rows(mlp[0].weight, pruned[0].weight)
    assert keep0 == expected[0]
    assert kept_rows(mlp[2].weight[:, keep0], pruned[2].weight) == expected[1]
    by_magnitude = cz.prune(mlp, "neurons", 0.5, data=x).model.module  # data only to trace it
    assert kept_rows(mlp[0].weight, by_magnitude[0].weight) != expected[0]  # the data changed the choice


def test_a_missed_coupling_is_caught_not_returned(monkeypatch):
    from compress.passes.prune import ops

    monkeypatch.setitem(ops.RULES, "add", lambda *args: None)  # forget that a residual add ties channels
    with pytest.raises(Unsupported, match=r"pruned TinyCNN fails to run|differs from the masked original"):
        cz.prune(tiny_cnn(), "channels", 0.5, data=torch.randn(2, 1, 16, 16))


def test_batch_norm_statistics_are_re_estimated_after_pruning():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)
    ).eval()
    net[1].running_mean.fill_(5.0)  # stale statistics
    x = torch.randn(16, 1, 10, 10)
    kept = cz.prune(net, "channels", 0.5, data=x, recalibrate=False).model.module[1].running_mean
    assert torch.all(kept == 5.0)
    pruned = cz.prune(net, "channels", 0.5, data=x).model.module
    with torch.inference_mode():
        expected = pruned[0](x).mean(dim=(0, 2, 3))  # the statistics of the pruned network's own inputs
    assert pruned[1].running_mean.shape == (4,)
    assert torch.allclose(pruned[1].running_mean, expected, atol=1e-5)


class FlattenedCNN(torch.nn.Module):
    """Two convolutions and a Linear head on the flattened feature map, channels first or last."""

    def __init__(self, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.head = torch.nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        return self.head(x.reshape(len(x), -1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_convolution_flattened_into_a_linear_layer_is_pruned_too(channels_last):
    torch.manual_seed(0)
    net = FlattenedCNN(channels_last).eval()
    x = torch.randn(6, 1, 8, 8)
    plan, cfg = plan_for(net, data=x[:2], pattern="channels")
    assert sorted(g.label for g in plan.groups) == ["conv1", "conv2"] and plan.left == {}
    masked, pruned = masked_and_pruned(net, plan, cfg)
    assert pruned.conv1.weight.shape == (4, 1, 3, 3) and pruned.conv2.weight.shape == (8, 4, 3, 3)
    assert pruned.head.weight.shape == (10, 8 * 2 * 2)  # each removed channel takes its 4 columns along
    kept = plan.keep[[g.label for g in plan.groups].index("conv2")].tolist()
    if channels_last:  # feature index = position * 16 + channel
        columns = [p * 16 + c for p in range(4) for c in kept]
    else:  # feature index = channel * 4 + position
        columns = [c * 4 + p for c in kept for p in range(4)]
    assert torch.equal(pruned.head.weight, net.head.weight[:, columns])
    assert torch.allclose(outputs(pruned, x[2:]), outputs(masked, x[2:]), atol=1e-5)


class KeepsSomeOutputs(torch.nn.Module):
    """conv2's channels are accumulated over (cumsum), conv3's are the model's output."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))).cumsum(1))


def test_structured_pruning_says_why_each_layer_keeps_its_outputs():
    from compress.evaluation import change_notes

    torch.manual_seed(0)
    artifact = cz.prune(KeepsSomeOutputs().eval(), "channels", 0.5, data=torch.randn(2, 1, 8, 8))
    changes = artifact.changes
    assert changes["conv2.weight"]["note"] == "output channels kept (normalised or accumulated over)"
    assert changes["conv2.weight"]["shape"] == [8, 4, 3, 3]  # its inputs still shrank with conv1
    assert changes["conv3.weight"]["note"] == "output channels kept (a model output)"
    assert "note" not in changes["conv1.weight"]
    assert artifact.stats["prune.layers_left_whole"] == 2.0
    assert change_notes(changes) == [
        "conv2: output channels kept (normalised or accumulated over)",
        "conv3: output channels kept (a model output)",
    ]


def test_neurons_say_which_linear_layers_hold_heads_instead(tiny_bert):
    artifact = cz.prune(str(tiny_bert), "neurons", 0.5)
    notes = {name: change["note"] for name, change in artifact.changes.items() if "note" in change}
    assert (
        notes["encoder.layer.0.attention.self.query.weight"]
        == "output features kept (they are heads, not neurons)"
    )
    assert "encoder.layer.0.intermediate.dense.weight" not in notes  # pruned
    assert all(name.endswith(".weight") for name in notes)
