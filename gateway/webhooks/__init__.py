"""PinmyCal's webhooks: signature check, the event, ingress and dead-letter routes, the
durable relay to subscribers, and the links from events to jobs and bookings.

May import: everything below it (``core`` … ``inbound``).
"""
