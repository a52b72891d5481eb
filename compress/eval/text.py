"""Running text models: batches of token ids, sentence embeddings, and fixed-shape latency inputs."""

from __future__ import annotations

from compress.errors import BadInput
from compress.model import Model

# A real sentence, repeated to the requested length, so latency inputs are ordinary tokens.
_LATENCY_TEXT = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the quarterly report "
    "and the engineers measure how long the compressed model takes to answer. "
)


def require_tokenizer(model: Model):
    if model.tokenizer is None:
        raise BadInput(f"{model.checkpoint}: has no tokenizer files beside it; text tasks need one.")
    return model.tokenizer


# Used only when neither the model nor its tokenizer states a limit (and none is set).
FALLBACK_TOKEN_LIMIT = 512
_UNSET = 10**9  # transformers' "no limit" model_max_length is int(1e30)


def token_limit(model: Model, asked: int | None = None) -> tuple[int, str]:
    """Tokens per text for the text tasks, and where that number comes from: `asked` when set, else
    the model's own maximum: sentence-transformers' max_seq_length when the folder has one (the
    length the embedding model was trained for), else the smaller of the tokenizer's
    model_max_length and the config's max_position_embeddings, counting only those that are set."""
    import json

    if asked is not None:
        return asked, "as set"
    st_config = model.folder / "sentence_bert_config.json" if model.folder else None
    if st_config is not None and st_config.is_file():
        try:
            length = json.loads(st_config.read_text()).get("max_seq_length")
        except (OSError, ValueError, AttributeError):
            length = None
        if isinstance(length, int) and length > 0:
            return length, "sentence_bert_config.json max_seq_length"
    found = []
    length = getattr(model.tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < _UNSET:
        found.append((length, "tokenizer model_max_length"))
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    length = getattr(config, "max_position_embeddings", None)
    if isinstance(length, int) and 0 < length < _UNSET:
        found.append((length, "config max_position_embeddings"))
    if found:
        return min(found)
    return FALLBACK_TOKEN_LIMIT, "no limit stated by the model (default)"


def tokenize(model: Model, texts: list[str], max_length: int) -> dict:
    tok = require_tokenizer(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return dict(tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length))


def sentence_embeddings(
    model: Model,
    texts: list[str],
    *,
    batch_size: int = 32,
    max_length: int = FALLBACK_TOKEN_LIMIT,
    progress=None,
):
    """Mean-pooled, L2-normalised embeddings of an encoder (the sentence-transformers recipe)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenize(model, texts[start : start + batch_size], max_length)
            hidden = model.module(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
            if progress:
                progress.advance(len(batch["input_ids"]))
    return torch.cat(out)


def latency_inputs(model: Model, batch_size: int, seq_len: int) -> dict:
    """A [batch, seq_len] batch of real tokens with a full attention mask."""
    import torch

    tok = require_tokenizer(model)
    ids = tok(_LATENCY_TEXT * (seq_len // 8 + 1), add_special_tokens=False)["input_ids"][:seq_len]
    if len(ids) < seq_len:
        raise BadInput(f"cannot build a {seq_len}-token latency input with this tokenizer.")
    input_ids = torch.tensor([ids] * batch_size, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
