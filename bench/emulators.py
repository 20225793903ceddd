"""The Twilio and OpenAI emulators in a process of their own, for benchmarks that load the machine.

    python -m bench.emulators --answer-latency 0.5 --send-latency 0.1

Prints one JSON line (base URLs and credentials), then serves until its standard input
closes. In their own process the emulators neither take the benchmark client's GIL nor
give it theirs, so the client's clock measures the servers under test.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.openai_fake import OpenAIFake  # noqa: E402
from tests.fakes.twilio_fake import TwilioFake  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answer-latency", type=float, default=0.0, help="seconds per Responses call")
    parser.add_argument("--send-latency", type=float, default=0.0, help="seconds per Twilio send")
    args = parser.parse_args()
    with TwilioFake() as twilio, OpenAIFake() as openai:
        twilio.send_latency = args.send_latency
        openai.set_latency(args.answer_latency, path_contains="/responses")
        print(json.dumps({"twilio_url": twilio.base_url, "account_sid": twilio.account_sid,
                          "auth_token": twilio.auth_token, "number": twilio.number,
                          "openai_url": openai.v1_url, "openai_key": openai.api_key}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
