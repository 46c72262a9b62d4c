"""The FT-Transformer embedder: ``torch.nn.TransformerEncoder`` over the feature tokens."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class TransformerEmbedder(nn.Module):
    """``n_layers`` post-norm encoder layers (ReLU feed-forward, no dropout), output = last token.

    The last token is the [CLS] token (the tokenizer appends it), as for the Mamba embedder, so
    both embedders read the same position. As in Gorishniy et al.'s FT-Transformer, the last
    layer computes only that token: its attention query, feed-forward and norms run on one token
    instead of all, the same output (its keys and values still come from every token).

    Shape:
        input: (batch, n_tokens, d_model); output: (batch, d_model).

    Examples:
        >>> import torch
        >>> enc = TransformerEmbedder(d_model=16, n_layers=1, n_heads=2, d_ffn=32)
        >>> enc(torch.randn(3, 7, 16)).shape
        torch.Size([3, 16])
        >>> sum(p.numel() for p in TransformerEmbedder(d_model=128, n_layers=2).parameters())
        1186048
    """

    def __init__(
        self,
        *,
        d_model: int,
        n_layers: int,
        n_heads: int = 2,
        d_ffn: int = 2048,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=d_ffn, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.d_out = d_model

    def forward(self, tokens: Tensor) -> Tensor:
        assert tokens.dim() == 3, f"expected (batch, n_tokens, d_model), got {tuple(tokens.shape)}"
        *layers, last = self.encoder.layers
        for layer in layers:
            tokens = layer(tokens)
        return _last_token_of(last, tokens)


def _last_token_of(layer: nn.TransformerEncoderLayer, tokens: Tensor) -> Tensor:
    """``layer(tokens)[:, -1]`` (post-norm, ReLU, no dropout, as this embedder builds it),
    computed for the last token's query alone."""
    query = tokens[:, -1:]
    attended = layer.self_attn(query, tokens, tokens, need_weights=False)[0]
    x = layer.norm1(query + attended)
    x = layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))
    return x[:, 0]
