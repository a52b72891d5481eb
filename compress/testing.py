"""Tiny models built in code, for tests and examples: no network, a few kilobytes each."""

from __future__ import annotations

from pathlib import Path

WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "the a an of to and in is it that for on with as was by at be this are from or have not but had "
    "money free offer click now win cash prize meeting report code bug fix patch release list email "
    "please thanks regards team project update today tomorrow week time work mail message help"
).split()


def tiny_mlp(seed: int = 0, width: int = 64):
    """A 3-layer MLP with widths that INT4 groups of 16/32 divide."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 8)
    ).eval()


def tiny_norm_mlp(seed: int = 0, width: int = 64, hidden: int = 128):
    """LayerNorm -> Linear -> ReLU -> Linear: the shape of a transformer MLP, for data-aware methods."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.LayerNorm(width), nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width)
    ).eval()
    with torch.no_grad():  # a few channels with large norm weights, as in trained language models
        model[0].weight.copy_(1.0 + torch.rand(width))
        model[0].weight[: width // 16] *= 8.0
    return model


def correlated_inputs(n: int, width: int = 64, seed: int = 0):
    """Inputs whose channels are strongly correlated (a low-rank mix plus a little noise)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(8, width, generator=generator)
    return torch.randn(n, 8, generator=generator) @ mix + 0.05 * torch.randn(n, width, generator=generator)


def tiny_cnn(seed: int = 0):
    """A small CNN with a residual connection, for 1x16x16 inputs."""
    import torch
    from torch import nn

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            h = torch.relu(self.conv2(h)) + h
            return self.head(h.mean(dim=(2, 3)))

    torch.manual_seed(seed)
    return TinyCNN().eval()


def tiny_tokenizer():
    """A lower-casing WordPiece tokenizer over a small word list plus single letters."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = list(dict.fromkeys(special + WORDS + letters + [f"##{c}" for c in letters] + [".", ","]))
    core = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _tiny_bert_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=160,
        **extra,
    )


def write_tiny_bert(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer BERT encoder with a WordPiece tokenizer, saved as an HF folder. Returns the weights file."""
    import torch
    from transformers import BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    config = _tiny_bert_config(len(tokenizer), architectures=["BertModel"])
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(folder)
    return folder / "model.safetensors"


def write_tiny_llama(
    folder: str | Path,
    seed: int = 0,
    tie: bool = True,
    hidden_size: int = 64,
    initializer_range: float = 0.02,
) -> Path:
    """A 2-layer Llama causal LM (tied embeddings by default) with the BERT tokenizer above; its FFN
    is twice `hidden_size` wide (hidden_size 128 fits INT4 groups of 128). With the default
    initializer_range its greedy decoding repeats the prompt's last token; 0.2 makes it vary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        initializer_range=initializer_range,
        architectures=["LlamaForCausalLM"],
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder / "model.safetensors"


def write_bare_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """A safetensors file with no config beside it: two matrices, a bias, an int buffer."""
    import torch

    from compress.checkpoint import save_tensors

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(
        path,
        {
            "layer1.weight": torch.randn(64, 32),
            "layer1.bias": torch.randn(64),
            "layer2.weight": torch.randn(16, 64),
            "steps": torch.tensor([3], dtype=torch.int64),
        },
    )
    return path


def assert_similar(a, b, *, min_cosine: float = 0.99) -> None:
    """Assert two outputs point the same way (cosine of the flattened tensors)."""
    import torch

    a, b = a.flatten().double(), b.flatten().double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    assert cos >= min_cosine, f"cosine {cos:.5f} < {min_cosine}"


def write_tiny_bert_classifier(
    folder: str | Path, seed: int = 0, labels: tuple[str, ...] = ("ham", "spam")
) -> Path:
    """A 2-layer BertForSequenceClassification with named labels, saved as an HF folder."""
    import torch
    from transformers import BertForSequenceClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    config = _tiny_bert_config(
        len(tokenizer),
        architectures=["BertForSequenceClassification"],
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder / "model.safetensors"
