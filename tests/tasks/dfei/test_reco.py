"""LCA matrices and decay-tree building on hand-built trees, deep chains, random forests and invalid input."""

import numpy as np
import pytest

from gnnreco.tasks.dfei.reco import (
    InvalidLCAMatrix,
    check_lca_matrix,
    forest_clusters,
    lca_from_ancestors,
    lca_from_parents,
    lca_to_adjacency,
    reconstruct_decay,
)

# B0 -> D-(-> K+ pi- pi-) pi+ : leaves K, pi, pi (from D, id 11) and pi+ (from B, id 10)
B_D_PI = np.array([[10, 11], [10, 11], [10, 11], [10, -1]])
B_D_PI_LCA = np.array([[0, 1, 1, 2], [1, 0, 1, 2], [1, 1, 0, 2], [2, 2, 2, 0]])
# B -> D*(-> D0(-> K pi) pi) pi : K, pi from D0 (12); pi from D* (11); pi from B (10)
DEEP = np.array([[10, 11, 12], [10, 11, 12], [10, 11, -1], [10, -1, -1]])
DEEP_LCA = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 2, 0, 3], [3, 3, 3, 0]])


def test_dfei_convention_hand_built():
    np.testing.assert_array_equal(lca_from_ancestors(B_D_PI), B_D_PI_LCA)
    np.testing.assert_array_equal(lca_from_ancestors(DEEP), DEEP_LCA)


def test_two_chains_and_background_are_zero():
    anc = np.array([[1, 2], [1, 2], [5, -1], [5, -1], [-1, -1]])
    a = lca_from_ancestors(anc)
    assert a[0, 1] == 1 and a[2, 3] == 1
    assert a[0, 2] == 0 and a[4].sum() == 0 and a[:, 4].sum() == 0


def test_cap_clips_deep_chains():
    anc = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, -1, -1, -1]])
    assert lca_from_ancestors(anc, cap=None)[0, 2] == 4
    assert lca_from_ancestors(anc, cap=3)[0, 2] == 3


@pytest.mark.parametrize("lca", [B_D_PI_LCA, DEEP_LCA])
def test_builders_recover_the_tree(lca):
    for build in (reconstruct_decay, lca_to_adjacency):
        parent = build(lca)
        np.testing.assert_array_equal(lca_from_parents(parent, len(lca)), lca)


def _random_forest(rng, n_trees=3, max_depth=6):
    """Leaves' ancestor lists of a random forest whose internal nodes all have >= 2 children."""
    rows, next_id = [], [0]

    def grow(chain, depth):
        n_children = int(rng.integers(2, 4))
        for _ in range(n_children):
            if depth < max_depth and rng.random() < 0.4:
                nid = next_id[0]
                next_id[0] += 1
                grow(chain + [nid], depth + 1)
            else:
                rows.append(chain)

    for _ in range(n_trees):
        nid = next_id[0]
        next_id[0] += 1
        grow([nid], 1)
    for _ in range(int(rng.integers(0, 4))):  # background particles
        rows.append([])
    rng.shuffle(rows)
    d = max(len(r) for r in rows)
    anc = np.full((len(rows), d), -1)
    for i, r in enumerate(rows):
        anc[i, :len(r)] = r
    return anc


@pytest.mark.parametrize("seed", range(20))
def test_random_forests_round_trip(seed):
    rng = np.random.default_rng(seed)
    anc = _random_forest(rng)
    lca = lca_from_ancestors(anc, cap=None)
    strict = lca_to_adjacency(lca)
    greedy = reconstruct_decay(lca)
    np.testing.assert_array_equal(lca_from_parents(strict, len(lca), cap=None), lca)
    np.testing.assert_array_equal(lca_from_parents(greedy, len(lca), cap=None), lca)
    # the clusters are the true chains
    roots = forest_clusters(strict, len(lca))
    same_chain = (anc[:, None, 0] == anc[None, :, 0]) & (anc[:, 0] >= 0)[:, None]
    same_root = roots[:, None] == roots[None, :]
    off = ~np.eye(len(lca), dtype=bool)
    np.testing.assert_array_equal(same_chain[off], same_root[off])


def test_deep_chain_uncapped():
    depth = 12
    anc = np.full((depth + 1, depth), -1)
    for i in range(depth):
        anc[i, :i + 1] = np.arange(i + 1)
    anc[depth] = np.arange(depth)  # two leaves at the bottom
    lca = lca_from_ancestors(anc, cap=None)
    assert lca.max() == depth
    parent = lca_to_adjacency(lca)
    assert len(parent) == (depth + 1) + depth  # leaves + one internal node per level
    np.testing.assert_array_equal(lca_from_parents(parent, len(lca), cap=None), lca)


def test_empty_and_isolated():
    assert len(reconstruct_decay(np.zeros((0, 0), int))) == 0
    parent = reconstruct_decay(np.zeros((4, 4), int))
    np.testing.assert_array_equal(parent, [-1, -1, -1, -1])
    np.testing.assert_array_equal(forest_clusters(parent, 4), [0, 1, 2, 3])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3), int), "square"),
    (np.array([[0, 1], [2, 0]]), "asymmetric"),
    (np.array([[1, 0], [0, 0]]), "diagonal"),
    (np.array([[0, 5], [5, 0]]), "out of range"),
    (np.array([[0, -1], [-1, 0]]), "out of range"),
    (np.array([[0.0, 0.5], [0.5, 0.0]]), "integers"),
])
def test_malformed_matrices_are_rejected(bad, match):
    with pytest.raises(InvalidLCAMatrix, match=match):
        check_lca_matrix(bad, max_value=3)
    with pytest.raises(InvalidLCAMatrix, match=match):
        reconstruct_decay(bad, max_value=3)


def test_strict_rejects_non_trees_greedy_still_builds_a_forest():
    not_ultrametric = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])
    with pytest.raises(InvalidLCAMatrix, match="ultrametric"):
        lca_to_adjacency(not_ultrametric)
    parent = reconstruct_decay(not_ultrametric)
    assert (parent[:3] >= 0).all()  # one tree of the three particles
    assert len(set(forest_clusters(parent, 3))) == 1
    disagree = np.array([[0, 1, 2, 0], [1, 0, 3, 0], [2, 3, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(InvalidLCAMatrix, match="ultrametric"):
        lca_to_adjacency(disagree)
    wrong_depth = np.array([[0, 2], [2, 0]])  # a root with value 2 needs a deeper branch
    with pytest.raises(InvalidLCAMatrix, match="depth convention"):
        lca_to_adjacency(wrong_depth)
    assert len(reconstruct_decay(wrong_depth)) == 3


def test_collapse_single_child_links():
    from gnnreco.tasks.dfei.reco import collapse_single_child

    # B(10) -> D(11)(-> K only reconstructed) pi ; B'(20) -> one particle only ; background
    anc = np.array([[10, 11], [10, -1], [20, -1], [-1, -1]])
    out = collapse_single_child(anc)
    np.testing.assert_array_equal(out, [[10], [10], [-1], [-1]])
    lca = lca_from_ancestors(out)
    assert lca[0, 1] == 1 and lca[2].sum() == 0
    lca_to_adjacency(lca)  # always a valid forest after collapsing
    # a copy chain (single child at every level) collapses to the branching node
    anc = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    np.testing.assert_array_equal(collapse_single_child(anc), [[4], [4]])
