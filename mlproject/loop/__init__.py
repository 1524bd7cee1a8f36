"""The labelling loop: the round policy (pure), a round against Label Studio, and the offline simulation."""
