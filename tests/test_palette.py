"""An optimizer's colour depends on its name only, so it is the same in every figure and store."""

from bench.figures import OPTIMIZER_COLORS, optimizer_palette


def test_an_outside_optimizer_keeps_its_colour_whatever_else_is_drawn() -> None:
    alone = optimizer_palette(["adam", "torch.optim.AdamW"])
    crowded = optimizer_palette(["sgd", "mysgd:SignSGD", "adam", "torch.optim.AdamW", "x:Y"])
    assert alone["torch.optim.AdamW"] == crowded["torch.optim.AdamW"]
    assert alone["adam"] == crowded["adam"] == OPTIMIZER_COLORS["adam"]


def test_colours_within_one_figure_differ() -> None:
    names = [*OPTIMIZER_COLORS, *(f"pkg.mod:Opt{i}" for i in range(20))]
    palette = optimizer_palette(names)
    assert len(set(palette.values())) == len(names)
