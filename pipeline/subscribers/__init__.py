"""subscribers stage."""
