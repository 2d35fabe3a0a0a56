"""Recipes: typed dataclasses, strict YAML loading, ``key=value`` overrides."""

from mmim.config.recipe import Recipe, load_recipe, recipe_to_dict

__all__ = ["Recipe", "load_recipe", "recipe_to_dict"]
