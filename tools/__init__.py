"""Tools that build and check the project (not installed with the package): the ShapesCLIP trainer and its quality
script, the mutation script, and the generator of the method tables."""
