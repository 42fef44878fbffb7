"""Print every record of one Vocalis session, from JetStream, in stream order.

python examples/show_session.py SESSION_ID NATS_URL      (for `vocalis serve`: the URL in <data dir>/nats.url)
"""

import asyncio
import sys

import nats


async def main(session_id: str, url: str) -> None:
    nc = await nats.connect(url)
    sub = await nc.jetstream().subscribe(f"vocalis.session.{session_id}.>", ordered_consumer=True)
    while True:
        msg = await sub.next_msg(timeout=5)
        print(msg.metadata.sequence.stream, msg.subject, msg.data[:160].decode(errors="replace"))
        if msg.metadata.num_pending == 0:
            break
    await nc.close()


asyncio.run(main(sys.argv[1], sys.argv[2]))
