"""Follow every Vocalis session live and print each finished transcript with its session id.

python examples/transcripts_subscriber.py NATS_URL [--prefix vocalis] [--limit N]
"""

import argparse
import asyncio
import json

import nats
from nats.js.api import DeliverPolicy

COMPLETED = "conversation.item.input_audio_transcription.completed"


async def main(url: str, prefix: str, limit: int) -> None:
    nc = await nats.connect(url)
    subject = f"{prefix}.session.*.out.{COMPLETED}"  # the * token is the session id
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    print("listening on", subject, flush=True)
    count = 0
    async for msg in sub.messages:
        event = json.loads(msg.data)
        print(msg.subject.split(".")[2], event["item_id"], event["transcript"], flush=True)
        count += 1
        if count == limit:
            break
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print every finished transcript of every session.")
    parser.add_argument(
        "url", help="the NATS URL: for `vocalis serve`, the one in <data dir>/nats.url (with its password)"
    )
    parser.add_argument("--prefix", default="vocalis", help="the server's VOCALIS_SUBJECT_PREFIX")
    parser.add_argument("--limit", type=int, default=0, help="exit after N transcripts (default: never)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.prefix, args.limit))
