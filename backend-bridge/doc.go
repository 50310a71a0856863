// Package bridge links the locker to the cloud MQTT broker that the back-end
// uses (SPEC §7).
//
// Upstream, it drains the store's durable outbox, not a local subscription: a
// broker drops QoS 1 messages to a slow subscriber under a burst, the outbox
// does not. Each message is mapped from its local topic (locky/up/X) to the
// cloud (lockers/{id}/up/X), published with QoS 1 in outbox order with a
// window of messages in flight, and removed from the outbox only after the
// cloud broker's PUBACK. After every reconnect it starts again from the oldest
// message still in the outbox: the back-end sees duplicates (it deduplicates by
// event_id), never a gap.
//
// Downstream, it subscribes to lockers/{id}/down/# and publishes each message
// on the local broker as locky/down/#, one at a time in order of receipt. The
// store handlers commit it inside that publish, so the bridge acknowledges it
// to the cloud only after Publish returns. A message the locker cannot commit
// (a full disk) is a local failure, not a link failure: the bridge keeps the
// link and the upstream flow, retries that message with back-off, holds the
// ones behind it (an upsert then a delete of one reservation must not swap),
// acknowledges none of them meanwhile, and says so in the retained status
// ("downstream":"retrying") and the metrics. Should the link or the gateway
// go down first, the cloud broker sends them all again.
//
// The cloud session is persistent (client id = locker id, clean start off, a
// session expiry), the retained lockers/{id}/status says online after every
// connect, and the Will says offline. Connection attempts back off
// exponentially with jitter; a dead uplink logs one line a minute, not one per
// attempt.
//
// Its place in the layering: above the handlers and the store, below the
// gateway; it reaches the locker only through its Outbox and Local
// interfaces.
package bridge
