"""Signed webhooks: job events POSTed to the URL a job (or the hub) subscribed.

- `settings`: the HUB_WEBHOOK_* settings.
- `targets`: which URLs and addresses a hub may send to (the SSRF rules).
- `signing`: the Standard Webhooks signature headers.
- `sender`: one HTTP attempt: the checked address, a timeout, a capped read, no redirects.
- `messages`: which deliveries a stream entry makes, and their bodies.
- `deliverer`: the loops that read the consumer group, retry and take over dead hubs' work.
- `routes`: the operator API for the dead letter.

Redis is shared/webhook_queue.py's business; nothing here sends a Redis command.
"""
