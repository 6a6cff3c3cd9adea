"""The search-space abstraction through the NAS-Bench-201 space."""
from __future__ import annotations

import pytest
import torch

from models.nb201 import NB201_OPS, NB201Cell
from models.profiling import count_parameters
from nas.errors import NASError
from nas.spaces import build_space
from nas.spaces.nb201 import NB201Space

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_enumerates_all_15625_distinct_architectures(nb201: NB201Space) -> None:
    codes = nb201.all_codes
    assert codes.shape == (15_625, 6)
    assert torch.unique(codes, dim=0).shape[0] == 15_625
    assert torch.equal(nb201.index_of(codes), torch.arange(15_625))


def test_string_round_trip_over_the_whole_space(nb201: NB201Space) -> None:
    for row in nb201.all_codes[::97].tolist():
        enc = tuple(row)
        assert nb201.parse(nb201.to_string(enc)) == enc
    assert nb201.to_string(nb201.parse(BEST)) == BEST


@pytest.mark.parametrize(
    "text",
    ["", "|nor_conv_3x3~0|", BEST.replace("skip_connect", "conv_5x5"), BEST.replace("~2|", "~1|"), BEST.replace("|+|", "|", 1)],
)
def test_malformed_architecture_strings_are_rejected(nb201: NB201Space, text: str) -> None:
    with pytest.raises(NASError, match="Malformed NAS-Bench-201 architecture string"):
        nb201.parse(text)


def test_encodings_outside_the_space_are_rejected(nb201: NB201Space) -> None:
    with pytest.raises(NASError, match="6 variables"):
        nb201.validate((1, 2, 3))
    with pytest.raises(NASError, match="takes codes 0..4"):
        nb201.validate((0, 0, 0, 0, 0, 5))


def test_unknown_space_names_the_valid_ones() -> None:
    with pytest.raises(NASError, match="Unknown search space 'nb999'; valid search spaces are .*nb201"):
        build_space("nb999")


def test_neighbours_and_mutations_change_exactly_one_edge(nb201: NB201Space) -> None:
    enc = nb201.parse(BEST)
    neighbours = nb201.neighbours(enc)
    assert neighbours.shape == (24, 6)
    assert ((neighbours != torch.tensor(enc)).sum(1) == 1).all()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        child = nb201.mutate(enc, generator)
        assert sum(a != b for a, b in zip(child, enc)) == 1


def test_sampling_is_seeded_and_covers_every_operation(nb201: NB201Space) -> None:
    a = nb201.sample(500, torch.Generator().manual_seed(3))
    b = nb201.sample(500, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    for edge in range(6):
        assert set(a[:, edge].tolist()) == set(range(5))


def test_features(nb201: NB201Space) -> None:
    codes = torch.tensor([nb201.parse(BEST), (0,) * 6, (1,) * 6])
    onehot = nb201.one_hot(codes)
    assert onehot.shape == (3, 30) and torch.equal(onehot.sum(1), torch.full((3,), 6.0))
    path = NB201Space(features="path").features(codes)
    # BEST has all four input-to-output paths alive; all-"none" has none; all-skip has four.
    assert path.shape == (3, 100) and path.sum(1).tolist() == [4.0, 0.0, 4.0]
    both = NB201Space(features="onehot+path").features(codes)
    assert torch.equal(both, torch.cat([onehot, path], 1))
    with pytest.raises(NASError, match="valid kinds are onehot, path, onehot\\+path"):
        NB201Space(features="graph")


def test_to_module_builds_the_benchmark_network(nb201: NB201Space) -> None:
    best = nb201.to_module(nb201.parse(BEST))
    skip_only = nb201.to_module((1,) * 6)
    out = best(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # Five 3x3 convolution edges per cell (conv + BN), 5 cells in each of the 16/32/64-wide stages.
    per_edge = sum(9 * c * c + 2 * c for c in (16, 32, 64)) * 5
    assert count_parameters(best) - count_parameters(skip_only) == 5 * per_edge


def test_cells_without_parameters_are_twins_exactly_when_they_compute_the_same_output(nb201: NB201Space) -> None:
    # The 729 cells of none / skip / average pooling: no weights, so the function is the output.
    free = nb201.all_codes[((nb201.all_codes == 0) | (nb201.all_codes == 1) | (nb201.all_codes == 4)).all(1)]
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = torch.stack([NB201Cell([NB201_OPS[v] for v in row], 3)(x).flatten() for row in free.tolist()])
    same_output = torch.cdist(outputs, outputs, compute_mode="donot_use_mm_for_euclid_dist") < 1e-4 * (1 + outputs.norm(dim=1, keepdim=True))
    keys = nb201.function_keys(free)
    assert torch.equal(keys[:, None] == keys[None, :], same_output)
    identity = nb201.function_keys(torch.tensor([nb201.parse("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")]))
    assert int((keys == identity).sum()) == 90  # NAS-Bench-201 lists 90 cells without weights that compute x


def test_twins_with_convolutions_share_their_weights_and_outputs(nb201: NB201Space) -> None:
    def cell(text: str) -> NB201Cell:
        return NB201Cell([NB201_OPS[v] for v in nb201.parse(text)], 3)

    # conv(x) reaches the output through node 1 and a skip, or directly: one function.
    via_node = cell("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    direct = cell("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    direct.edges[3].load_state_dict(via_node.edges[0].state_dict())
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(via_node(x), direct(x))
    codes = torch.tensor([nb201.parse(t) for t in (
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
        "|none~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|none~2|",  # a dead end: node 2 is not used
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|",  # conv of a zero node: its BN bias
        "|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|",
    )])
    keys = nb201.function_keys(codes).tolist()
    assert keys[0] == keys[1] == keys[2] and len({keys[0], keys[3], keys[4]}) == 3
