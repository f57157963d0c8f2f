"""The recipes (``conf/experiment``) and the groups each is written for.

A recipe chooses a ``data``, a ``model`` and a ``task`` and changes a few of their values for
that combination. ``python train.py`` runs the one ``conf/train.yaml`` names (the digits'). A
command that chooses another combination without ``experiment=...`` gets the one packaged
recipe written for it (``task=mae_pretrain`` -> ``experiment=digits_mae_pretrain``), named on
the command line Hydra records; where none or several are, the run is refused naming them,
since the default recipe's values would otherwise be applied to, say, ImageNet.

Light on imports: the commands resolve the recipe before Hydra starts.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vitlab.config import CONFIG_PATH, command_overrides, parse_overrides
from vitlab.errors import UserError

RECIPES = Path(CONFIG_PATH) / "experiment"
# the groups a recipe is written for
RECIPE_GROUPS = ("data", "model", "task")


def recipe_groups(path: Path) -> dict[str, str]:
    """The ``data``, ``model`` and ``task`` options a recipe file chooses (``override /data:
    ...``), following the recipes it builds on (``- ibot_vit_s``)."""
    groups: dict[str, str] = {}
    for entry in OmegaConf.load(path).get("defaults", []):
        if isinstance(entry, str) and not entry.startswith("/") and entry != "_self_":
            groups |= recipe_groups(path.with_name(f"{entry}.yaml"))
        elif isinstance(entry, DictConfig):
            for key, option in entry.items():
                group = str(key).removeprefix("override").strip().removeprefix("/")
                if group in RECIPE_GROUPS:
                    groups[group] = option
    return dict(sorted(groups.items(), key=lambda item: RECIPE_GROUPS.index(item[0])))


def packaged_recipes() -> dict[str, dict[str, str]]:
    return {path.stem: recipe_groups(path) for path in sorted(RECIPES.glob("*.yaml"))}


def default_recipe(config_name: str) -> str | None:
    """The recipe ``conf/<config_name>.yaml`` composes when none is named."""
    for entry in OmegaConf.load(Path(CONFIG_PATH) / f"{config_name}.yaml").get("defaults", []):
        if isinstance(entry, DictConfig) and "experiment" in entry:
            return entry.experiment
    return None


def with_recipe(arguments: list[str], config_name: str) -> list[str]:
    """``arguments`` with ``experiment=<recipe>`` added where they choose ``data``, ``model``
    or ``task`` options (one each, no sweep) that the default recipe is not written for and
    exactly one packaged recipe is. Anything else is left to :func:`check_recipe_named`."""
    default = default_recipe(config_name)
    given = {o.key_or_group: o for o in command_overrides(arguments)}
    if default is None or "experiment" in given:
        return arguments
    chosen = {g: o for g, o in given.items() if g in RECIPE_GROUPS and not o.is_delete()}
    if not chosen or any(o.is_sweep_override() for o in chosen.values()):
        return arguments
    recipes = packaged_recipes()
    wanted = recipes[default] | {group: str(o.value()) for group, o in chosen.items()}
    if wanted == recipes[default]:
        return arguments
    fitting = [name for name, groups in recipes.items() if groups == wanted]
    if len(fitting) != 1:
        return arguments
    # on stderr: --cfg's config on stdout stays YAML
    print(
        f"recipe: experiment={fitting[0]}, the one written for {describe(wanted)}", file=sys.stderr
    )
    return [*arguments, f"experiment={fitting[0]}"]


def check_recipe_named(overrides: Sequence[str], choices: Mapping[str, str | None]) -> None:
    """A ``data=``, ``model=`` or ``task=`` choice on the command line runs with a recipe
    written for it: named with ``experiment=...`` (or added by :func:`with_recipe`).

    ``overrides`` are the command's (``hydra.overrides.task``), ``choices`` the composed ones
    (``hydra.runtime.choices``); the packaged recipes that fit are listed.
    """
    given = {o.key_or_group for o in parse_overrides(list(overrides))}
    if "experiment" in given:
        return
    recipes = packaged_recipes()
    default = choices.get("experiment")
    written_for = recipes.get(default, {})
    changed = [
        group
        for group in RECIPE_GROUPS
        if group in given and choices.get(group) != written_for.get(group)
    ]
    if not changed:
        return
    fitting = sorted(
        name for name, groups in recipes.items()
        if all(groups.get(group) == choices.get(group) for group in changed)
    )  # fmt: skip
    named = " ".join(f"{group}={choices.get(group)}" for group in changed)
    options = f"experiment={', '.join(fitting)}, or " if fitting else ""
    raise UserError(
        f"{named}: the default recipe (experiment={default}, conf/train.yaml) is written for "
        f"{describe(written_for) or 'other groups'}; name one: {options}experiment=none for "
        "the groups' own defaults"
    )


def describe(groups: Mapping[str, str | None]) -> str:
    return ", ".join(f"{group}={groups[group]}" for group in RECIPE_GROUPS if group in groups)
