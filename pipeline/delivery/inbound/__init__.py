"""delivery.inbound stage."""
