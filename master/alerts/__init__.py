"""From results to behaviours: rules, events and the webhooks that deliver them."""
