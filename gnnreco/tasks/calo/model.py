r"""GravNet network with object-condensation heads (Qasim et al. 2019; HGCalML).

A GravNet block (:class:`GravNetBlock`) learns a space :math:`S` and features to propagate
:math:`F_{LR}` from its input :math:`\mathbf{h}_i`, builds the kNN graph in :math:`S` per event and
aggregates neighbour features with a Gaussian distance weight:

.. math::
    \mathbf{s}_i = W_s \mathbf{h}_i,\quad \mathbf{f}_i = \mathrm{relu}(W_f \mathbf{h}_i + b_f),\quad
    w_{ij} = \exp(-10\, d_{ij}^2),\ d_{ij}^2 = \lVert\mathbf{s}_i-\mathbf{s}_j\rVert^2 / \sigma_i^2

    \mathbf{a}_i = \operatorname{mean}_{j\in\mathcal{N}_k(i)} w_{ij}\mathbf{f}_j \,\Vert\,
        \max_{j\in\mathcal{N}_k(i)} w_{ij}\mathbf{f}_j \;(-\;\mathbf{f}_i\Vert\mathbf{f}_i
        \text{ with ``subtract_self``}),\qquad
    \mathbf{h}'_i = \mathrm{MLP}(\mathbf{h}_i \,\Vert\, \mathbf{a}_i)

:math:`\mathcal{N}_k(i)` contains :math:`i` itself (as HGCalML's ``k+1`` selection). With
``local_scale`` a per-hit distance scale :math:`\sigma_i = \mathrm{softplus}(w_\sigma^\top\mathbf{h}_i)
+ 0.05` is predicted; otherwise :math:`\sigma_i = 1`. The graph comes from
:func:`gnnreco.graph.knn` (``scipy.spatial.cKDTree`` on CPU with ``knn_impl="auto"``), the
aggregation from :func:`gnnreco.ops.multi_aggregate`; the distances are differentiable so the space
is learned through the weights.

:class:`CaloGravNet` stacks blocks as in the paper model (global-mean exchange → dense layers →
GravNet, block outputs concatenated) and predicts per hit: :math:`\beta` (sigmoid), cluster
coordinates, an energy correction factor (multiplying the summed hit energy of the reconstructed
shower; optional 16 %/84 % quantiles), the impact position offset from the hit (mm), the time offset
(ns) and PID logits. Its ``forward(x, batch)`` takes and returns tensors only (export-friendly).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnreco.explain import tap
from gnnreco.nn.mlp import MLP
from gnnreco.ops import scatter_mean, scatter_sum
from gnnreco.tasks.calo.data import FEATURE_NAMES, POSITION_SCALE_MM
from gnnreco.tasks.calo.reco import SharedAssignment

_COL_X, _COL_DZ = FEATURE_NAMES.index("x"), FEATURE_NAMES.index("dz")
_COL_LOGE, _COL_ETA = FEATURE_NAMES.index("log_energy"), FEATURE_NAMES.index("eta")
_COL_LAYER, _COL_EM = FEATURE_NAMES.index("layer"), FEATURE_NAMES.index("em_section")

__all__ = ["GravNetBlock", "CaloGravNet", "knn_edges", "knn_matrix", "rotate_quarter", "symmetric_views"]


def knn_edges(s: Tensor, k: int, batch: Tensor, impl: str = "auto") -> Tensor:
    """kNN graph in the learned space, self included: ``[2, E]`` (row 0 target i, row 1 neighbour j)."""
    from gnnreco import _compat

    with torch.no_grad():
        sd = s.detach()
        if impl == "torch_cluster" or (impl == "auto" and _compat.WITH_TORCH_CLUSTER and not s.is_cuda):
            if not _compat.WITH_TORCH_CLUSTER:
                raise ImportError("knn_impl='torch_cluster' needs the optional package torch_cluster")
            e = _compat.torch_cluster.knn(sd, sd, k, batch, batch)
        elif impl in ("auto", "gnnreco"):
            from gnnreco.graph import knn

            e = knn(sd, sd, k, batch, batch)
        elif impl == "triton":
            from gnnreco.graph import knn_graph

            e = knn_graph(sd, k, batch, loop=True, flow="target_to_source", method="triton")
        elif impl == "scipy":
            nbr = _knn_scipy(sd, k, batch)
            tgt = torch.arange(sd.shape[0], device=sd.device).unsqueeze(1).expand_as(nbr)
            ok = nbr < sd.shape[0]
            e = torch.stack([tgt[ok], nbr[ok]])
        elif impl == "dense":
            nbr = _knn_dense(sd, k, batch)
            tgt = torch.arange(sd.shape[0], device=sd.device).unsqueeze(1).expand_as(nbr)
            e = torch.stack([tgt.reshape(-1), nbr.reshape(-1)])
        else:
            raise ValueError("knn_impl must be 'auto', 'gnnreco', 'triton', 'torch_cluster', 'scipy' or 'dense', "
                             f"got {impl!r}")
    return e


def _knn_dense(s: Tensor, k: int, batch: Tensor) -> Tensor:
    """Export path (TorchScript/ONNX): masked N×N distances + TopK, traceable with a dynamic N.

    O(N²) memory: meant for one event at a time in a C++ reconstruction loop, with N ≥ k."""
    d = torch.cdist(s, s)
    d = d.masked_fill(batch.unsqueeze(0) != batch.unsqueeze(1), float("inf"))
    return d.topk(k, dim=1, largest=False).indices


def _knn_scipy(s: Tensor, k: int, batch: Tensor) -> Tensor:
    """``[N, k]`` neighbours per event, self included, from :func:`gnnreco.graph.knn_index`'s cKDTree
    backend (``method="kdtree"``; ``N`` marks a missing one)."""
    from gnnreco.graph import knn_index

    return knn_index(s, k, batch, loop=True, method="kdtree", fill_value=s.shape[0])


def _triton_fits(s: Tensor, k: int) -> bool:
    """Whether the one-kernel Triton kNN runs here (triton installed, CUDA, k <= 64, D <= 8)."""
    from gnnreco.graph import _triton_knn

    return _triton_knn.available(s.float(), k)


def knn_matrix(s: Tensor, k: int, batch: Tensor, impl: str = "auto") -> Tensor | None:
    """The kNN graph as a ``[N, k]`` neighbour matrix (self included), or ``None`` when some event has
    fewer than ``k`` hits (then use :func:`knn_edges`)."""
    n = s.shape[0]
    with torch.no_grad():
        sd = s.detach()
        if impl == "dense":
            return _knn_dense(sd, k, batch)
        if n == 0 or int(torch.bincount(batch).min()) < k:
            return None
        if impl == "auto" and not s.is_cuda:
            from gnnreco.graph import _native, knn_index

            if _native.supports(sd):  # gnnreco's native k-d tree: same neighbours, ~1.7x faster than cKDTree
                return knn_index(sd, k, batch, loop=True, method="native", fill_value=n)
            return _knn_scipy(sd, k, batch)
        if impl == "scipy" and not s.is_cuda:
            return _knn_scipy(sd, k, batch)
        if impl == "triton" or (impl == "auto" and s.is_cuda and _triton_fits(sd, k)):
            # the one-kernel engine (float32, CUDA or TRITON_INTERPRET=1); on a GPU the default: the
            # calo network's forward took 28 ms with it against 48 ms with the block engine (H200)
            from gnnreco.graph import knn_index

            return knn_index(sd.float(), k, batch, loop=True, method="triton", fill_value=n)
        if impl in ("auto", "gnnreco") and s.is_cuda:  # the block engine writes the matrix directly
            from gnnreco.graph import knn_index

            return knn_index(sd, k, batch, loop=True, fill_value=n)
        e = knn_edges(sd, k, batch, impl)
        if e.shape[1] != n * k:
            return None
        nbr = e[1].view(n, k)
        if not bool((e[0].view(n, k) == torch.arange(n, device=s.device)[:, None]).all()):
            return None
        return nbr


def _torch_cluster_ok() -> bool:
    from gnnreco import _compat

    return bool(_compat.WITH_TORCH_CLUSTER)



class GravNetBlock(nn.Module):
    r"""HGCalML-style GravNet layer (see the module docstring for the equations).

    Args:
        in_dim: input features :math:`F_{in}`.
        space_dim: dimension of the learned space :math:`S`.
        prop_dim: propagated features :math:`F_{LR}`.
        out_dim: output features :math:`F_{out}`.
        k: neighbours per hit (including itself).
        subtract_self: subtract the hit's own :math:`\mathbf{f}_i` from mean and max.
        local_scale: predict a per-hit distance scale :math:`\sigma_i`.
        knn_impl: ``"auto"`` (``"scipy"`` on CPU, ``"triton"`` on GPU when triton is installed, else
            ``gnnreco``), ``"gnnreco"``, ``"triton"`` (the
            one-kernel engine of ``gnnreco.graph``, float32 on CUDA),
            ``"torch_cluster"``, ``"scipy"`` (``cKDTree``, queried on ``torch.get_num_threads()``
            workers) or ``"dense"`` (the traceable export path).

    When every event has at least ``k`` hits the graph is a ``[N, k]`` neighbour matrix and the
    aggregation is two dense reductions over its rows; otherwise the edge list goes through
    :func:`gnnreco.ops.multi_aggregate` (same values).

    Shapes:
        h ``[N, F_in]``, batch ``[N]`` (sorted event index), anchor ``[N, A]`` (optional, added to the
        first ``A`` coordinates of :math:`S`) → out ``[N, F_out]``, s ``[N, S]``.
    """

    def __init__(self, in_dim: int, space_dim: int = 3, prop_dim: int = 32, out_dim: int = 48, k: int = 16,
                 subtract_self: bool = True, local_scale: bool = False, knn_impl: str = "auto") -> None:
        super().__init__()
        self.k, self.subtract_self, self.local_scale, self.knn_impl = k, subtract_self, local_scale, knn_impl
        self.lin_s = nn.Linear(in_dim, space_dim, bias=False)
        with torch.no_grad():  # near-identity start (HGCalML EyeInitializer)
            self.lin_s.weight.normal_(0.0, 1e-2)
            m = min(in_dim, space_dim)
            self.lin_s.weight[:m, :m] += torch.eye(m)
        self.lin_f = nn.Linear(in_dim, prop_dim)
        self.lin_sigma = nn.Linear(in_dim, 1) if local_scale else None
        self.out = MLP(in_dim + 2 * prop_dim, out_dim, out_dim, n_layers=2, activation="elu", norm="layer",
                       output_activation="elu")

    def forward(self, h: Tensor, batch: Tensor, anchor: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = self.lin_s(h)
        if anchor is not None:  # learned offsets around a physical position (first dims of S)
            a = anchor.shape[1]
            s = torch.cat([s[:, :a] + anchor, s[:, a:]], dim=1)
        # explanation taps: LRP holds the learned space (graph building and weights) constant
        s = tap.hold(s)
        f = torch.relu(self.lin_f(h))
        sigma = None
        if self.lin_sigma is not None:
            sigma = tap.hold(nn.functional.softplus(self.lin_sigma(h)).squeeze(-1) + 0.05)
        nbr = None if tap.active() else knn_matrix(s, self.k, batch, self.knn_impl)
        if nbr is not None:
            # regular layout: every hit has exactly k neighbours -> dense gathers and reductions, in a
            # [k, N, F] layout (neighbour-major) so that mean and max reduce over the outer dimension
            n, k = nbr.shape
            flat = nbr.t().reshape(-1)
            d2 = ((s.index_select(0, flat).view(k, n, -1) - s.unsqueeze(0)) ** 2).sum(-1)
            if sigma is not None:
                d2 = d2 / (sigma ** 2).unsqueeze(0)
            w = torch.exp(-10.0 * d2)
            if self.knn_impl == "dense":  # the export kNN may reach into another event when N < k
                w = w * (batch.index_select(0, flat).view(k, n) == batch.unsqueeze(0)).to(w.dtype)
            fj = f.index_select(0, flat).view(k, n, -1)
            # no autograd graph at inference: weight the gathered copy in place (one [k, N, F] buffer)
            msg = fj.mul_(w.unsqueeze(-1)) if not torch.is_grad_enabled() else fj * w.unsqueeze(-1)
            agg = torch.cat([msg.sum(0).div_(k), msg.amax(0)], dim=1)
        else:
            e = knn_edges(s, self.k, batch, self.knn_impl)
            i, j = e[0], e[1]
            d2 = ((s[i] - s[j]) ** 2).sum(-1)
            if sigma is not None:
                d2 = d2 / sigma[i] ** 2
            w = torch.exp(-10.0 * d2)
            if self.knn_impl == "dense":  # the export kNN may reach into another event when N < k
                w = w * (batch[i] == batch[j]).to(w.dtype)
            agg = tap.aggregate("knn", f[j] * w[:, None], i, h.shape[0], ("mean", "max"), j)
        if self.subtract_self:
            agg = agg - f.repeat(1, 2)
        return self.out(torch.cat([h, agg], dim=1)), s


class ShowerCalibration(nn.Module):
    r"""Shower-level energy calibration: :math:`E = c(\mathbf{u}_k)\,S_k` with :math:`S_k=\sum_{j\in k} e_j`.

    After condensation (or, in training, on the truth assignment) every shower :math:`k` is described
    by energy-weighted moments of its hits, :math:`\mathbf{u}_k` = (log :math:`S_k`, EM-section energy
    fraction, mean and RMS layer, log hit count, mean η, mean log hit energy, lateral RMS on the front
    face, and the :math:`\beta^2`-weighted means of the network's per-hit energy factor and PID
    probabilities), and a small MLP predicts the correction factor :math:`c`. The moments carry what a
    per-hit head sees only through its neighbours: whether the shower is electromagnetic (all energy
    early, dense) or hadronic (deep, sparse, with an EM fraction that fluctuates), so the factor can
    calibrate, and partly compensate, each shower.

    Args:
        n_pid: PID classes of the per-hit head.
        hidden: MLP width.

    Shapes:
        x ``[N, F_in]``, xy ``[N, 2]``, energy ``[N]``, assignment ``[N]`` (−1 unassigned),
        hit_factor ``[N]``, pid_logits ``[N, P]``, beta ``[N]`` → factor ``[K]``, sum ``[K]``.
    """

    n_moments = 8

    def __init__(self, n_pid: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.n_in = self.n_moments + 1 + n_pid
        self.mlp = MLP(self.n_in, hidden, 1, n_layers=3, activation="elu", norm="none")
        with torch.no_grad():
            self.mlp[-1].weight.mul_(0.1)
            self.mlp[-1].bias.zero_()

    def features(self, x: Tensor, xy: Tensor, energy: Tensor, assignment: Tensor | SharedAssignment, n_showers: int,
                 hit_factor: Tensor, pid_logits: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        """Per-shower moments ``[K, n_in]`` and summed hit energies ``[K]``.

        ``assignment`` is a hard cluster index per hit (−1 unassigned) or a fractional
        :class:`~gnnreco.tasks.calo.reco.SharedAssignment`; with fractions :math:`f_{j\\alpha}` every
        sum over a shower's hits becomes a sum over its pairs weighted by :math:`f_{j\\alpha}` (energy
        :math:`f e_j`, hit count :math:`\\sum f`, :math:`\\beta^2 f` for the network features).
        """
        if isinstance(assignment, SharedAssignment):
            h, a, frac = assignment.hit, assignment.cluster, assignment.fraction
        else:
            ok = assignment >= 0
            h = torch.nonzero(ok, as_tuple=True)[0]
            a, frac = assignment[h], None
        k = n_showers
        e = energy[h].clamp(min=0.0)
        if frac is not None:
            e = e * frac
        xs = x[h]
        s_sum = scatter_sum(e, a, dim=0, dim_size=k)
        den = s_sum.clamp(min=1e-6)

        def wmean(v: Tensor) -> Tensor:
            v2 = v.unsqueeze(-1) if v.dim() == 1 else v  # (no reshape(-1): zero assigned hits must work)
            return scatter_sum(e.unsqueeze(-1) * v2, a, dim=0, dim_size=k) / den.unsqueeze(-1)

        layer = xs[:, _COL_LAYER]
        m_layer = wmean(layer)[:, 0]
        rms_layer = (wmean((layer - m_layer[a]) ** 2)[:, 0]).clamp(min=0.0).sqrt()
        pxy = xy[h] / 100.0
        m_xy = wmean(pxy)
        rms_xy = (wmean(((pxy - m_xy[a]) ** 2).sum(1))[:, 0]).clamp(min=0.0).sqrt()
        n_hits = scatter_sum(torch.ones_like(e) if frac is None else frac, a, dim=0, dim_size=k)
        w2 = beta[h] ** 2 if frac is None else beta[h] ** 2 * frac
        wden = scatter_sum(w2, a, dim=0, dim_size=k).clamp(min=1e-6).unsqueeze(-1)
        net_feats = scatter_sum(w2.unsqueeze(-1) * torch.cat([hit_factor[h].unsqueeze(-1),
                                                               torch.softmax(pid_logits[h], -1)], 1),
                                a, dim=0, dim_size=k) / wden
        u = torch.cat([
            (torch.log(den / 10.0) / 2.0).unsqueeze(1),
            wmean(xs[:, _COL_EM]),
            m_layer.unsqueeze(1), rms_layer.unsqueeze(1),
            (torch.log1p(n_hits) / 5.0).unsqueeze(1),
            wmean(xs[:, _COL_ETA]), wmean(xs[:, _COL_LOGE]),
            rms_xy.unsqueeze(1), net_feats,
        ], dim=1)
        return u, s_sum

    def forward(self, u: Tensor) -> Tensor:
        return 1.0 + self.mlp(u).squeeze(-1)


class CaloGravNet(nn.Module):
    r"""GravNet + object-condensation heads for calorimeter hits.

    Args:
        in_dim: hit features :math:`F_{in}` (``gnnreco.tasks.calo.data.F_IN``).
        hidden: width of the dense layers.
        n_blocks: GravNet blocks.
        space_dim, prop_dim, k, subtract_self, local_scale, knn_impl: of each :class:`GravNetBlock`.
        coord_dim: cluster-space dimension :math:`C`.
        n_pid: PID classes.
        energy_quantiles: add the 16 %/84 % quantile outputs of the energy factor.
        predict_distance_scale: add a per-hit distance-scale output (for the soft OC potential and
            a local condensation radius).
        coord_anchor_mm: when > 0, the first two cluster coordinates are learned offsets around the
            hit's position projected onto the front face, :math:`(x, y)\,z_{front}/z`, in units of
            this length (mm): hits of one shower start close together and separated showers far
            apart, so training only has to learn the corrections (the shower halo, overlaps).
        space_anchor_mm: the same anchor (in units of this length) added to the first two
            coordinates of every GravNet space, so the first kNN graphs are physical neighbourhoods.
        z_front: front-face z (mm) of the projection.
        shower_calibration: add a :class:`ShowerCalibration` head (``self.shower_head``) used by
            :meth:`shower_energy` after condensation; it is not part of the tensor-only ``forward``.

    Shapes:
        x ``[N, F_in]``, batch ``[N]`` → dict of ``beta [N]``, ``coords [N, C]``, ``energy_factor [N]``,
        (``energy_q [N, 2]``), ``position [N, 2]``, ``time [N]``, ``pid_logits [N, P]``,
        (``distance_scale [N]``).
    """

    def __init__(self, in_dim: int = 9, hidden: int = 64, n_blocks: int = 4, space_dim: int = 3,
                 prop_dim: int = 32, k: int = 16, subtract_self: bool = True, local_scale: bool = False,
                 knn_impl: str = "auto", coord_dim: int = 3, n_pid: int = 4, energy_quantiles: bool = False,
                 predict_distance_scale: bool = False, coord_anchor_mm: float = 0.0,
                 space_anchor_mm: float = 0.0, z_front: float = 3200.0, shower_calibration: bool = False) -> None:
        super().__init__()
        if (coord_anchor_mm > 0 and coord_dim < 2) or (space_anchor_mm > 0 and space_dim < 2):
            raise ValueError("model.net.coord_anchor_mm / space_anchor_mm need coord_dim / space_dim >= 2")
        self.coord_anchor_mm, self.space_anchor_mm, self.z_front = coord_anchor_mm, space_anchor_mm, z_front
        if n_blocks < 1:
            raise ValueError(f"model.net.n_blocks must be >= 1, got {n_blocks}")
        self.in_dim, self.coord_dim, self.n_pid = in_dim, coord_dim, n_pid
        self.energy_quantiles, self.predict_distance_scale = energy_quantiles, predict_distance_scale
        self.embed = MLP(in_dim, hidden, hidden, n_layers=2, activation="elu", norm="layer", output_activation="elu")
        self.pre = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            self.pre.append(MLP(2 * hidden, hidden, hidden, n_layers=2, activation="elu", norm="layer",
                                output_activation="elu"))
            self.blocks.append(GravNetBlock(hidden, space_dim, prop_dim, hidden, k, subtract_self, local_scale,
                                            knn_impl))
        self.trunk = MLP(in_dim + n_blocks * hidden, 2 * hidden, hidden, n_layers=3, activation="elu",
                         norm="layer", output_activation="elu")
        n_energy = 3 if energy_quantiles else 1
        self.n_out = 1 + coord_dim + n_energy + 2 + 1 + n_pid + (1 if predict_distance_scale else 0)
        self.head = nn.Linear(hidden, self.n_out)
        self.shower_head = ShowerCalibration(n_pid) if shower_calibration else None

    def shower_energy(self, x: Tensor, out: dict[str, Tensor], energy: Tensor,
                      assignment: Tensor | SharedAssignment, n_showers: int) -> tuple[Tensor, Tensor]:
        """Calibrated energy ``[K]`` and summed hit energy ``[K]`` of the showers of ``assignment``
        (a cluster index per hit, or the fractional pairs of :func:`~gnnreco.tasks.calo.reco.share_energy`).

        With ``shower_calibration`` the factor comes from :class:`ShowerCalibration`; otherwise it is
        the per-hit ``energy_factor`` at the β-weighted (β²) mean over the shower's hits.
        """
        xy = self.front_face_xy(x)
        if self.shower_head is not None:
            u, s_sum = self.shower_head.features(x, xy, energy, assignment, n_showers, out["energy_factor"],
                                                 out["pid_logits"], out["beta"])
            return self.shower_head(u) * s_sum, s_sum
        if not isinstance(assignment, SharedAssignment):
            assignment = SharedAssignment.from_hard(assignment)
        h, a, frac = assignment.hit, assignment.cluster, assignment.fraction
        s_sum = scatter_sum(energy[h].clamp(min=0.0) * frac, a, dim=0, dim_size=n_showers)
        w2 = out["beta"][h] ** 2 * frac
        f = scatter_sum(w2 * out["energy_factor"][h], a, dim=0, dim_size=n_showers) / \
            scatter_sum(w2, a, dim=0, dim_size=n_showers).clamp(min=1e-12)
        return f * s_sum, s_sum

    def front_face_xy(self, x: Tensor) -> Tensor:
        """Hit position projected onto the front face along the line from the origin, ``[N, 2]`` mm."""
        xy = x[:, _COL_X:_COL_X + 2] * POSITION_SCALE_MM
        z = self.z_front + x[:, _COL_DZ] * POSITION_SCALE_MM
        return xy * (self.z_front / z.clamp(min=1.0)).unsqueeze(1)

    def forward(self, x: Tensor, batch: Tensor) -> dict[str, Tensor]:
        n_graphs = int(batch.max()) + 1 if batch.numel() else 1
        anchored = self.coord_anchor_mm > 0 or self.space_anchor_mm > 0
        xy = self.front_face_xy(x) if anchored else None
        s_anchor = xy / self.space_anchor_mm if (xy is not None and self.space_anchor_mm > 0) else None
        h = self.embed(x)
        outs = [x]
        for pre, block in zip(self.pre, self.blocks):
            g = scatter_mean(h, batch, dim=0, dim_size=n_graphs)[batch]
            h = pre(torch.cat([h, g], dim=1))
            h, _ = block(h, batch, s_anchor)
            outs.append(h)
        z = self.head(self.trunk(torch.cat(outs, dim=1)))
        c = self.coord_dim
        o = 0
        res: dict[str, Tensor] = {}
        res["beta"] = torch.sigmoid(z[:, o]).clamp(1e-6, 1.0 - 1e-6)
        o += 1
        coords = z[:, o:o + c]
        if xy is not None and self.coord_anchor_mm > 0:
            coords = torch.cat([coords[:, :2] + xy / self.coord_anchor_mm, coords[:, 2:]], dim=1)
        res["coords"] = coords
        o += c
        res["energy_factor"] = 1.0 + z[:, o]
        o += 1
        if self.energy_quantiles:
            res["energy_q"] = 1.0 + z[:, o:o + 2]
            o += 2
        res["position"] = 100.0 * z[:, o:o + 2]
        o += 2
        res["time"] = z[:, o]
        o += 1
        res["pid_logits"] = z[:, o:o + self.n_pid]
        o += self.n_pid
        if self.predict_distance_scale:
            res["distance_scale"] = nn.functional.softplus(z[:, o]) + 0.05
        return res


def rotate_quarter(v: Tensor, turns: int) -> Tensor:
    """Rotate 2-vectors ``[N, 2]`` by ``turns`` quarter turns (90°) counter-clockwise about the beam axis."""
    turns %= 4
    if turns == 0:
        return v
    if turns == 2:
        return -v
    x, y = v[:, 0], v[:, 1]
    return torch.stack([-y, x], 1) if turns == 1 else torch.stack([y, -x], 1)


def symmetric_views(net: CaloGravNet, x: Tensor, batch: Tensor, views: int = 1) -> dict[str, Tensor]:
    r"""The network's outputs averaged over rotations of the event about the beam axis.

    The simulated endcap (:class:`~gnnreco.sim.calo.CaloGeometry`: square cells on an :math:`x, y`
    grid, a ring-shaped acceptance, no magnetic field) is symmetric under quarter turns about the
    beam axis: a rotated event is another event of the same detector, and a cell centre goes to a
    cell centre. The network is not equivariant, so each rotated copy gives slightly different
    outputs; their mean is a test-time ensemble that costs no training. ``views`` copies (1: the
    event as it is; 2: also the half turn, which any detector symmetric under
    :math:`(x, y) \to (-x, -y)` allows; 4: every quarter turn) go through the network as one batch,
    and the outputs are mapped back before the mean: the anchored cluster coordinates (the first
    two are front-face positions plus learned offsets, ``coord_anchor_mm > 0``) and the predicted
    impact offsets (``position``) are rotated back, every other output (β, energy factor, time,
    PID logits, distance scale) is averaged as it is.

    Shapes: x ``[N, F_in]``, batch ``[N]`` → the dict of :meth:`CaloGravNet.forward`.
    """
    if views not in (1, 2, 4):
        raise ValueError(f"symmetric_views: views must be 1, 2 or 4 (the rotations that map the cell grid "
                         f"onto itself), got {views}")
    if views == 1:
        return net(x, batch)
    if getattr(net, "coord_anchor_mm", 0.0) <= 0:
        raise ValueError("symmetric_views: views > 1 need cluster coordinates anchored at the hits' front-face "
                         "positions (coord_anchor_mm > 0); unanchored coordinates have no frame to rotate back")
    turns = [0, 2] if views == 2 else [0, 1, 2, 3]
    n = x.shape[0]
    n_graphs = int(batch.max()) + 1 if batch.numel() else 1
    xs = []
    for t in turns:
        xr = x.clone()
        xr[:, _COL_X:_COL_X + 2] = rotate_quarter(x[:, _COL_X:_COL_X + 2], t)
        xs.append(xr)
    out = net(torch.cat(xs), torch.cat([batch + i * n_graphs for i in range(len(turns))]))
    res: dict[str, Tensor] = {}
    for key, v in out.items():
        parts = list(v.split(n))
        if key == "coords":
            parts = [torch.cat([rotate_quarter(p[:, :2], -t), p[:, 2:]], 1) for p, t in zip(parts, turns)]
        elif key == "position":
            parts = [rotate_quarter(p, -t) for p, t in zip(parts, turns)]
        res[key] = torch.stack(parts).mean(0)
    return res
