"""delivery.email stage."""
