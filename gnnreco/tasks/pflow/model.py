"""MLPF networks on padded PF-element tensors: GNN-LSH, GravNet and transformer backbones.

Every network takes ``(X[B, N, 12], mask[B, N])`` (Delphes element schema, ``mask`` True for real
elements) and returns the tuple

``(binary[B,N,2], pid[B,N,6], charge[B,N,3], reg[B,N,5], p4[B,N,5])``

* ``binary`` — logits of particle vs none;
* ``pid`` — class logits (0 none, 1 ch.had, 2 n.had, 3 γ, 4 e, 5 μ);
* ``charge`` — logits of q ∈ {−1, 0, +1};
* ``reg`` — raw regression ``(log p_T/p_T,elem, Δη, Δsinφ, Δcosφ, log E/E_elem)``;
* ``p4`` — decoded candidate ``(p_T, η, sinφ, cosφ, E)``: p_T = p_T,elem·e^{reg₀}, η = η_elem + reg₁, …

as in MLPF (Pata et al.), the identification and regression paths have separate backbones, and the
regression head sees the identification embedding and class probabilities.

The GNN-LSH backbone (reference §3.2, PyTorch version): per layer a distance space
``d = FFN_dist(h)``; elements are hashed by angular LSH (``argmax([dR, −dR])`` with a fixed random
codebook R), sorted by bucket and cut into bins of exactly ``bin_size`` elements; inside a bin the
adjacency is the dense Gaussian kernel ``A_ij = exp(−κ‖d_i − d_j‖²)`` (padding rows/columns zeroed) and
two gated GHConv steps update the nodes; results are scattered back to the original order. Cost is
O(N·bin_size) — linear in N.

Optional geometric prior (``geo_scale > 0``, not in the MLPF reference): the calorimeter-surface direction
``(η, sinφ, cosφ)`` of each element (track: η_out, φ_out), times a learnable scale initialised to
``geo_scale``, is appended to the learned distance coordinates (GNN-LSH) or to the GravNet space. Hashes
and kernels then see geometric neighbours (tracks next to their clusters) from the first step, which
matters when the training budget is minutes of CPU rather than GPU-days.

The LSH binning is :func:`gnnreco.graph.lsh_bins` with ``buckets="codebook"`` (a fixed number of hash
buckets set by the codebook, as in MLPF); it uses only sort/gather/scatter/reshape with ``-1`` so ONNX
export keeps N dynamic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnreco.explain import tap
from gnnreco.graph import lsh_bins as graph_lsh_bins
from gnnreco.nn.mlp import MLP

__all__ = ["MLPFNet", "GHConvDense", "LSHLayer", "GravNetLayer", "TransformerLayer", "lsh_perm",
           "encode_elements", "decode_momentum", "pad_to_multiple", "calo_position"]

NUM_CLASSES = 6


def encode_elements(X: Tensor) -> Tensor:
    r"""Input normalisation: log of the energy-like columns, per element type.

    Tracks keep ``[p_T, p] → log``; clusters ``[E_T, E, E_em, E_had] → log(1+·)``; the type becomes
    a one-hot pair. Output features: 13. Columns after the 12th (the optional link features of
    :mod:`gnnreco.tasks.pflow.links`, in GeV and possibly negative) are appended as the signed log
    :math:`\operatorname{sign}(x)\log(1 + |x|)`.

    Shapes:
        X :math:`(B, N, 12 + F_x)` → :math:`(B, N, 13 + F_x)`.
    """
    if X.shape[-1] > 12:
        x = X[..., 12:]
        return torch.cat([encode_elements(X[..., :12]), torch.sign(x) * torch.log1p(x.abs())], -1)
    is_trk = (X[..., 0:1] == 2).to(X.dtype)
    is_cl = (X[..., 0:1] == 1).to(X.dtype)
    logs = torch.log1p(torch.cat([X[..., 1:2], X[..., 5:6]], -1).clamp(min=0))
    c67 = X[..., 6:8]
    c67 = is_cl * torch.log1p(c67.clamp(min=0)) + is_trk * c67
    return torch.cat([is_trk, is_cl, logs, X[..., 2:5], c67, X[..., 8:12]], -1)


def decode_momentum(X: Tensor, reg: Tensor) -> Tensor:
    r"""Candidate ``(p_T, η, sinφ, cosφ, E)`` from the element and the regression output.

    :math:`p_T = p_{T,elem} e^{r_0}`, :math:`\eta = \eta_{elem} + r_1`, :math:`\sin\phi = \sin\phi_{elem} + r_2`,
    :math:`\cos\phi = \cos\phi_{elem} + r_3`, :math:`E = E_{elem} e^{r_4}` (exponent clamped to ±8).
    """
    pt = X[..., 1] * torch.exp(reg[..., 0].clamp(-8, 8))
    e = X[..., 5] * torch.exp(reg[..., 4].clamp(-8, 8))
    return torch.stack([pt, X[..., 2] + reg[..., 1], X[..., 3] + reg[..., 2], X[..., 4] + reg[..., 3], e], -1)


def calo_position(X: Tensor) -> Tensor:
    """Calorimeter-surface direction ``(η, sinφ, cosφ)``: (η_out, φ_out) for tracks, (η, φ) for clusters.

    Shapes:
        X :math:`(B, N, 12)` → :math:`(B, N, 3)`.
    """
    is_trk = (X[..., 0:1] == 2).to(X.dtype)
    return is_trk * X[..., 6:9] + (1 - is_trk) * X[..., 2:5]


def pad_to_multiple(X: Tensor, mask: Tensor, multiple: int) -> tuple[Tensor, Tensor]:
    """Zero-pad the element axis to a multiple of ``multiple`` (shape arithmetic stays traceable)."""
    n = X.shape[1]
    pad = (multiple - n % multiple) % multiple
    # new_zeros (not torch.zeros(device=...)) keeps a traced export device-agnostic
    zx = X.new_zeros((X.shape[0], pad, X.shape[2]))
    zm = mask.new_zeros((mask.shape[0], pad))
    return torch.cat([X, zx], 1), torch.cat([mask, zm], 1)


def lsh_perm(d: Tensor, mask: Tensor, codebook: Tensor, bin_size: int) -> Tensor:
    """Flat bucket-sorting permutation :math:`(B, N)` of :func:`gnnreco.graph.lsh_bins` (codebook buckets)."""
    return graph_lsh_bins(d, codebook, bin_size, mask=mask, buckets="codebook").reshape(d.shape[0], -1)


class GHConvDense(nn.Module):
    r"""Gated graph-hybrid convolution on dense per-bin adjacency (MLPF GHConv).

    .. math::
        g = \sigma(h W_g + b_g),\quad
        h' = \mathrm{act}\big(g \odot \hat{A}\, h W_t + (1 - g) \odot h W_h\big),\quad
        \hat{A} = D^{-1/2} A D^{-1/2}.

    Shapes:
        h :math:`(B, K, S, F)`, A :math:`(B, K, S, S)` → :math:`(B, K, S, F)` (K bins of S elements).
    """

    def __init__(self, width: int, activation: str = "elu"):
        super().__init__()
        self.width = width
        # W_t, W_h and W_g in one Linear (one matrix product instead of three)
        self.lin = nn.Linear(width, 3 * width)
        self.act = nn.ELU() if activation == "elu" else nn.GELU()

    def forward(self, h: Tensor, A: Tensor) -> Tensor:
        deg = A.sum(-1, keepdim=True).clamp(min=1e-6)
        norm = deg.rsqrt()
        f_t, f_h, f_g = self.lin(h).split(self.width, -1)
        src = norm * f_t
        agg = norm * (A @ src)
        tap.bin_messages("lsh", agg, src, A, norm)  # explanation taps: bin messages, the gate held constant
        g = tap.hold(torch.sigmoid(f_g))
        return self.act(f_h + g * (agg - f_h))


class LSHLayer(nn.Module):
    """One GNN-LSH layer: distance FFN, LSH bins, Gaussian kernel, ``n_steps`` GHConv steps, residual+norm."""

    def __init__(self, width: int, bin_size: int = 64, distance_dim: int = 32, kernel_scale: float = 0.1,
                 n_steps: int = 2, max_hashes: int = 32, dropout: float = 0.0, seed: int = 0,
                 geo_scale: float = 0.0):
        super().__init__()
        self.bin_size = int(bin_size)
        self.kernel_scale = float(kernel_scale)
        self.ffn_dist = MLP(width, width, distance_dim, n_layers=2, activation="elu")
        n_geo = 3 if geo_scale > 0 else 0
        self.geo_scale = nn.Parameter(torch.tensor(float(geo_scale))) if n_geo else None
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("codebook", torch.randn(distance_dim + n_geo, max_hashes // 2, generator=g),
                             persistent=True)
        self.convs = nn.ModuleList(GHConvDense(width) for _ in range(n_steps))
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, mask: Tensor, geo: Tensor | None = None) -> Tensor:
        B, N, W = h.shape
        S = self.bin_size
        d = self.ffn_dist(h)
        if self.geo_scale is not None and geo is not None:
            d = torch.cat([d, self.geo_scale * geo], -1)
        d = tap.hold(d)  # the distance space builds the bins and the kernel: held constant by LRP
        perm = lsh_perm(d, mask, self.codebook, S)
        hs = h.gather(1, perm.unsqueeze(-1).expand(-1, -1, W)).reshape(B, -1, S, W)
        ds = d.gather(1, perm.unsqueeze(-1).expand(-1, -1, d.shape[-1])).reshape(B, -1, S, d.shape[-1])
        ms = mask.gather(1, perm).reshape(B, -1, S).to(h.dtype)
        sq = ds.pow(2).sum(-1)
        d2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * ds @ ds.transpose(-1, -2)).clamp(min=0)
        A = torch.exp(-self.kernel_scale * d2) * ms.unsqueeze(-1) * ms.unsqueeze(-2)
        x = hs
        with tap.bins(perm):
            for conv in self.convs:
                x = conv(x, A)
        x = self.drop(x).reshape(B, -1, W)
        out = torch.zeros_like(h).scatter(1, perm.unsqueeze(-1).expand(-1, -1, W), x)
        return self.norm(h + out) * mask.unsqueeze(-1).to(h.dtype)


class GravNetLayer(nn.Module):
    r"""Dense GravNet layer (Qasim et al. 2019) on padded events.

    Coordinates :math:`s = h W_s` (dimension S), features :math:`f = h W_{f}`; for each element its k
    nearest real elements in s give messages :math:`f_j e^{-10 d_{ij}^2}`, aggregated by mean and max;
    :math:`h' = \mathrm{Norm}(h + W_o[h, \text{mean}, \text{max}])`. Cost O(N²) per event: for the
    scaling study use GNN-LSH. (Private dense version: ``gnnreco.nn`` had no GravNet on padded input.)

    Shapes:
        h :math:`(B, N, F)`, mask :math:`(B, N)` → :math:`(B, N, F)`.
    """

    def __init__(self, width: int, space_dim: int = 4, prop_dim: int = 32, k: int = 16, dropout: float = 0.0,
                 geo_scale: float = 0.0):
        super().__init__()
        self.k = int(k)
        self.geo_scale = nn.Parameter(torch.tensor(float(geo_scale))) if geo_scale > 0 else None
        self.lin_s = nn.Linear(width, space_dim)
        self.lin_f = nn.Linear(width, prop_dim)
        self.lin_o = nn.Linear(width + 2 * prop_dim, width)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, mask: Tensor, geo: Tensor | None = None) -> Tensor:
        B, N, _ = h.shape
        s, f = self.lin_s(h), self.lin_f(h)
        if self.geo_scale is not None and geo is not None:
            s = torch.cat([s, self.geo_scale * geo], -1)
        s = tap.hold(s)  # the learned space builds the graph and the weights: held constant by LRP
        d2 = (s.unsqueeze(2) - s.unsqueeze(1)).pow(2).sum(-1)
        d2 = d2.masked_fill(~mask.unsqueeze(1), 1e9)
        k = min(self.k, N)
        negd, idx = torch.topk(-d2, k, dim=-1)
        w = torch.exp(10.0 * negd) * (negd > -1e8).to(h.dtype)
        fj = f.gather(1, idx.reshape(B, -1, 1).expand(-1, -1, f.shape[-1])).reshape(B, N, k, -1)
        msg = tap.knn_messages("knn", fj * w.unsqueeze(-1), idx, negd > -1e8)
        mean = msg.sum(2) / (negd > -1e8).to(h.dtype).sum(-1, keepdim=True).clamp(min=1)
        mx = msg.max(2).values
        out = self.lin_o(torch.cat([h, mean, mx], -1))
        return self.norm(h + self.drop(tap.elementwise(out, F.elu(out)))) * mask.unsqueeze(-1).to(h.dtype)


class TransformerLayer(nn.Module):
    r"""Pre-norm transformer encoder layer with ``scaled_dot_product_attention`` and a padding mask.

    :math:`h \leftarrow h + \mathrm{MHA}(\mathrm{LN}(h))`, :math:`h \leftarrow h + \mathrm{FFN}(\mathrm{LN}(h))`;
    padded elements are never attended to.
    """

    def __init__(self, width: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ffn = MLP(width, 2 * width, width, n_layers=2, activation="gelu", norm="none")
        self.dropout = float(dropout)

    def forward(self, h: Tensor, mask: Tensor, geo: Tensor | None = None) -> Tensor:
        B, N, W = h.shape
        q, k, v = self.qkv(self.ln1(h)).reshape(B, N, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        a = tap.attention("attention", q, k, v, mask, self.dropout if self.training else 0.0)
        h = h + self.out(a.transpose(1, 2).reshape(B, N, W))
        h = h + self.ffn(self.ln2(h))
        return h * mask.unsqueeze(-1).to(h.dtype)


class MLPFNet(nn.Module):
    """MLPF network: embedding, identification and regression backbones, output heads.

    Args:
        backbone: ``gnn_lsh``, ``gravnet`` or ``transformer``.
        in_features: element features (12, Delphes schema).
        width: hidden width.
        n_layers: layers of *each* backbone (identification and regression).
        bin_size, distance_dim, kernel_scale, n_steps: GNN-LSH settings.
        k, space_dim, prop_dim: GravNet settings.
        heads: transformer heads.
        dropout: dropout in the backbones.
        geo_scale: initial scale of the geometric prior (0 = off).
        extra_features: columns appended after the 12 schema features (``X[B, N, 12 + extra_features]``),
            e.g. 4 for the track–cluster link features of :func:`gnnreco.tasks.pflow.links.with_link_features`.
    """

    def __init__(self, backbone: str = "gnn_lsh", in_features: int = 12, width: int = 64, n_layers: int = 2,
                 bin_size: int = 64, distance_dim: int = 32, kernel_scale: float = 0.1, n_steps: int = 2,
                 k: int = 16, space_dim: int = 4, prop_dim: int = 32, heads: int = 4, dropout: float = 0.0,
                 geo_scale: float = 0.0, extra_features: int = 0):
        super().__init__()
        if in_features != 12:
            raise ValueError(f"in_features must be 12 (Delphes element schema), got {in_features}")
        if extra_features < 0:
            raise ValueError(f"extra_features must be >= 0, got {extra_features}")
        self.extra_features = int(extra_features)
        if backbone not in ("gnn_lsh", "gravnet", "transformer"):
            raise ValueError(f"backbone={backbone!r}; expected 'gnn_lsh', 'gravnet' or 'transformer'")
        self.backbone = backbone
        self.bin_size = int(bin_size) if backbone == "gnn_lsh" else 1
        enc_dim = 13 + self.extra_features

        def make_layer(i: int) -> nn.Module:
            if backbone == "gnn_lsh":
                return LSHLayer(width, bin_size, distance_dim, kernel_scale, n_steps, dropout=dropout, seed=i,
                                geo_scale=geo_scale)
            if backbone == "gravnet":
                return GravNetLayer(width, space_dim, prop_dim, k, dropout, geo_scale=geo_scale)
            return TransformerLayer(width, heads, dropout)

        self.embed_id = MLP(enc_dim, width, width, n_layers=2, activation="elu")
        self.embed_reg = MLP(enc_dim, width, width, n_layers=2, activation="elu")
        self.layers_id = nn.ModuleList(make_layer(i) for i in range(n_layers))
        self.layers_reg = nn.ModuleList(make_layer(100 + i) for i in range(n_layers))
        self.head_binary = MLP(enc_dim + width, width, 2, n_layers=2, activation="elu")
        self.head_pid = MLP(enc_dim + width, width, NUM_CLASSES, n_layers=2, activation="elu")
        self.head_charge = MLP(enc_dim + width, width, 3, n_layers=2, activation="elu")
        self.head_reg = MLP(enc_dim + 2 * width + NUM_CLASSES, width, 5, n_layers=3, activation="elu")
        # start from the element's own kinematics (reg = 0): tracks are right from the first step
        last = [m for m in self.head_reg.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, X: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Shapes: X :math:`(B, N, 12)`, mask :math:`(B, N)` bool → outputs :math:`(B, N, \\cdot)`."""
        N = X.shape[1]
        if X.shape[-1] != 12 + self.extra_features:
            raise ValueError(f"X has {X.shape[-1]} features per element; this network expects "
                             f"{12 + self.extra_features} (12 schema columns + extra_features={self.extra_features})")
        mask = mask.to(torch.bool)
        if self.bin_size > 1:
            X, mask = pad_to_multiple(X, mask, self.bin_size)
        X = X * mask.unsqueeze(-1).to(X.dtype)
        e = tap.input("node", encode_elements(X))  # LRP explains the encoded element features
        mf = mask.unsqueeze(-1).to(X.dtype)
        geo = tap.hold(calo_position(X))  # enters graph building (distance spaces) only
        h_id = self.embed_id(e) * mf
        for layer in self.layers_id:
            h_id = layer(h_id, mask, geo)
        h_reg = self.embed_reg(e) * mf
        for layer in self.layers_reg:
            h_reg = layer(h_reg, mask, geo)
        z = torch.cat([e, h_id], -1)
        binary, pid, charge = self.head_binary(z), self.head_pid(z), self.head_charge(z)
        # the class probabilities feed the regression head as a relevance sink under LRP
        reg = self.head_reg(torch.cat([e, h_id, h_reg, tap.sink(torch.softmax(pid, -1))], -1))
        p4 = decode_momentum(X, reg)
        outs = (binary, pid, charge, reg, p4)
        return tuple(o[:, :N] for o in outs)  # type: ignore[return-value]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)



