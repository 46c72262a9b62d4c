"""A plain MLP embedder: the sanity baseline that sees every token at once, in no order."""

from __future__ import annotations

from torch import Tensor, nn

from recsim_ft.checks import check_int


class MLPEmbedder(nn.Module):
    """Flatten the tokens, then ``n_layers`` x (Linear -> ReLU) of width ``d_hidden``.

    Shape:
        input: (batch, n_tokens, d_token); output: (batch, d_hidden).

    Examples:
        >>> import torch
        >>> MLPEmbedder(n_tokens=4, d_token=8, d_hidden=16, n_layers=2)(torch.randn(3, 4, 8)).shape
        torch.Size([3, 16])
    """

    def __init__(self, *, n_tokens: int, d_token: int, d_hidden: int, n_layers: int) -> None:
        super().__init__()
        check_int("n_layers", n_layers, low=1)
        widths = [n_tokens * d_token] + [d_hidden] * n_layers
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.d_out = d_hidden

    def forward(self, tokens: Tensor) -> Tensor:
        assert tokens.dim() == 3, f"expected (batch, n_tokens, d_token), got {tuple(tokens.shape)}"
        return self.mlp(tokens)
