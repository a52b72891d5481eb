"""The embedding task: do the candidate's sentence embeddings agree with the baseline's?

Without labels: the cosine between each text's two embeddings (mean and worst) and the Spearman
rank correlation of all pairwise similarities (does the candidate rank neighbours as the baseline
does). With a similarity-labelled set (text1, text2, score columns): Spearman correlation of each
model's cosine similarities with the human scores, and the candidate's retention of it.
"""

from __future__ import annotations

from compress.errors import BadInput
from compress.eval.accuracy import AccuracyResult, Task
from compress.eval.data import load_labelled, read_rows
from compress.eval.text import sentence_embeddings, token_limit
from compress.model import Model

PAIR_COLUMNS = ("text1", "text2", "score")


def rankdata(values) -> list[float]:
    """1-based ranks, ties given their average rank (as scipy.stats.rankdata does)."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse].tolist()


def spearman(a, b) -> float:
    """Spearman rank correlation: the Pearson correlation of the ranks."""
    import numpy as np

    ra, rb = np.asarray(rankdata(a)), np.asarray(rankdata(b))
    if len(ra) < 2:
        raise BadInput("a rank correlation needs at least two values.")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator else 0.0


class Embedding(Task):
    name = "embedding"
    metric = "cosine"

    def __init__(
        self,
        source: str | None = None,
        *,
        text_column: str = "text",
        limit: int | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
    ):
        self.max_length, self.batch_size = max_length, batch_size  # max_length None: the model's own
        self.tokens: tuple[int, str] = (0, "")
        self.pairs: tuple[list[str], list[str], list[float]] | None = None
        if source is None:
            self.label = "spam (built-in, test half)"
            self.texts = load_labelled("spam", limit=limit or 256).test_texts
            return
        self.label, rows = read_rows(source, ())
        if all(c in rows[0] for c in PAIR_COLUMNS):
            rows = rows[:limit] if limit else rows
            try:
                scores = [float(r["score"]) for r in rows]
            except (TypeError, ValueError):
                raise BadInput(f"{self.label}: the 'score' column must hold numbers.") from None
            self.pairs = ([str(r["text1"]) for r in rows], [str(r["text2"]) for r in rows], scores)
            self.metric = "spearman"
            self.texts = list(dict.fromkeys(self.pairs[0] + self.pairs[1]))
        elif text_column in rows[0]:
            self.texts = [str(r[text_column]) for r in rows][:limit]
        else:
            raise BadInput(
                f"{self.label}: has neither a '{text_column}' column nor {', '.join(PAIR_COLUMNS)} columns "
                f"(columns: {', '.join(rows[0])})."
            )
        if len(self.texts) < 2:
            raise BadInput(f"{self.label}: needs at least two texts to compare embeddings.")

    def _embed(self, model: Model, progress):
        return sentence_embeddings(
            model, self.texts, batch_size=self.batch_size, max_length=self.tokens[0], progress=progress
        )

    def run(self, baseline: Model, candidate: Model, progress=None) -> AccuracyResult:
        import torch

        if baseline.family != "encoder":
            raise BadInput(f"the embedding task needs an encoder; this model is a {baseline.family}.")
        self.tokens = token_limit(baseline, self.max_length)
        if progress:
            progress.start("embedding", total=2 * len(self.texts))
        base, cand = self._embed(baseline, progress), self._embed(candidate, progress)
        if progress:
            progress.done()
        cosine = (base * cand).sum(dim=1)
        upper = torch.triu_indices(len(base), len(base), offset=1)
        sims_b = (base @ base.T)[upper[0], upper[1]]
        sims_c = (cand @ cand.T)[upper[0], upper[1]]
        details = {
            "dataset": self.label,
            "n_texts": len(self.texts),
            "cosine_mean": cosine.mean().item(),
            "cosine_min": cosine.min().item(),
            "pairwise_spearman": spearman(sims_b.tolist(), sims_c.tolist()),
            "max_length": self.tokens[0],
            "max_length_from": self.tokens[1],
        }
        if self.pairs is None:
            return self.result(details["cosine_mean"], 1.0, details)
        first, second, human = self.pairs
        row = {t: i for i, t in enumerate(self.texts)}
        a = torch.tensor([row[t] for t in first])
        b = torch.tensor([row[t] for t in second])
        base_score = spearman((base[a] * base[b]).sum(1).tolist(), human)
        cand_score = spearman((cand[a] * cand[b]).sum(1).tolist(), human)
        details["n_pairs"] = len(human)
        details["scored_against"] = "human similarity scores (Spearman of cosine similarity)"
        return self.result(cand_score, base_score, details)
