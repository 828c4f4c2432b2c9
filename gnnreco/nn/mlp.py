"""The multilayer perceptron every gnnreco model is built from."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MLP", "make_activation", "make_norm"]

_ACTIVATIONS = {
    "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "elu": nn.ELU, "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "identity": nn.Identity, "none": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    """Activation module by name (``relu``, ``silu``, ``gelu``, ``elu``, ``tanh``, ``leaky_relu``, ...)."""
    key = (name or "none").lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]()


def make_norm(name: str | None, dim: int) -> nn.Module:
    """Normalisation by name: ``layer``, ``batch`` or ``none``."""
    key = (name or "none").lower()
    if key in ("layer", "layernorm"):
        return nn.LayerNorm(dim)
    if key in ("batch", "batchnorm"):
        return nn.BatchNorm1d(dim)
    if key in ("none", "identity"):
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; expected 'layer', 'batch' or 'none'")


class MLP(nn.Sequential):
    r"""Fully connected network :math:`h_{l+1} = \sigma(\mathrm{Norm}(W_l h_l + b_l))`.

    Args:
        in_dim: input features :math:`F_{in}`.
        hidden: width of each hidden layer, or a list of widths.
        out_dim: output features :math:`F_{out}`.
        n_layers: number of Linear layers (used when ``hidden`` is an int).
        activation: hidden activation name.
        norm: ``layer``, ``batch`` or ``none`` after each hidden Linear.
        output_activation: activation after the last Linear (default none).
        output_norm: apply the normalisation after the last Linear as well.
        dropout: dropout probability after each hidden activation.

    Shapes:
        input :math:`(*, F_{in})`, output :math:`(*, F_{out})` (BatchNorm needs 2-D input).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int | Sequence[int],
        out_dim: int,
        n_layers: int = 2,
        activation: str = "relu",
        norm: str | None = "layer",
        output_activation: str | None = None,
        output_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        if isinstance(hidden, int):
            if n_layers < 1:
                raise ValueError(f"n_layers must be >= 1, got {n_layers}")
            widths = [hidden] * (n_layers - 1)
        else:
            widths = list(hidden)
        dims = [in_dim, *widths, out_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            last = i == len(dims) - 2
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if not last:
                layers.append(make_norm(norm, dims[i + 1]))
                layers.append(make_activation(activation))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            else:
                if output_norm:
                    layers.append(make_norm(norm, dims[i + 1]))
                if output_activation:
                    layers.append(make_activation(output_activation))
        super().__init__(*[m for m in layers if not isinstance(m, nn.Identity)])
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - Sequential semantics
        return super().forward(x)

