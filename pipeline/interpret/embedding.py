"""2-D embeddings of the penultimate features (the head's input): PCA (numpy SVD) and t-SNE.

The penultimate features of a ChartCNN are the flattened output of its last conv block, the
vector the final linear layer turns into logits (46,080 numbers for I20). One member's features
are embedded (members do not share a feature space).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.interpret.scoring import EnsembleScore, to_pixels


def penultimate_features(score: EnsembleScore, images: np.ndarray, member: int = 0,
                         batch_size: int = 256) -> np.ndarray:
    """float32 (N, fc_in): member ``member``'s last-block output, flattened as its head flattens."""
    m: nn.Module = score.members[member]
    dev = score.scale.device
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = score.normalise(to_pixels(images[s:s + batch_size], dev))
            x = x.to(next(m.parameters()).dtype)
            feats = m.features(x)[-1] if hasattr(m, "features") else None
            if feats is None:
                raise ValueError(f"{type(m).__name__} has no .features(x): not a ChartCNN")
            out.append(feats.flatten(1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def pca(features: np.ndarray, n_components: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the centred features by SVD.

    Returns (scores float64 (N, k), explained_variance_ratio float64 (k,)), k = min(n_components,
    N, D); ratios are each component's share of the total variance, in descending order. Signs are
    fixed so each component's largest-|loading| feature has a positive loading (deterministic).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca needs (N >= 2, D) features; got {x.shape}")
    xc = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    k = min(n_components, len(s))
    sign = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    sign[sign == 0] = 1
    total = float((s ** 2).sum())
    ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
    return (u[:, :k] * s[:k]) * sign, ratio


def tsne(features: np.ndarray, perplexity: float, seed: int, pca_dims: int = 50) -> np.ndarray:
    """float64 (N, 2) t-SNE (scikit-learn, PCA initialisation) of the features after projecting
    them on their first ``pca_dims`` principal components (the usual denoising step)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float64)
    if not 1 <= perplexity < len(x):
        raise ValueError(f"t-SNE perplexity {perplexity} must lie in [1, N={len(x)})")
    scores, _ = pca(x, min(pca_dims, len(x) - 1))
    # One OpenMP thread: scikit-learn's OpenMP runtime competing with torch's spinning threads
    # made 12 points take 50 s instead of 4 on a 2-core machine; a few hundred points need no more.
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    learning_rate="auto").fit_transform(scores)
