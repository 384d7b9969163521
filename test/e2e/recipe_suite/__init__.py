"""The e2e recipe (e2e-recipe.md), every example automated, with the controller installed by its chart."""
