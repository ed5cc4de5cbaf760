"""A bare SQS drainer (receive + delete, one thread per queue) run as its own process
while a benchmark publishes, so that moto's queues stay shallow. Stops on SIGTERM."""

import signal
import sys
import threading

import boto3

stop = threading.Event()


def drain(endpoint: str, url: str) -> None:
    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    while not stop.is_set():
        try:
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if msgs:
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
                )
        except Exception as exc:  # keep draining
            print(f"drainer: {exc}", file=sys.stderr)
            stop.wait(0.5)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    endpoint, *urls = sys.argv[1:]
    threads = [threading.Thread(target=drain, args=(endpoint, u), daemon=True) for u in urls]
    for t in threads:
        t.start()
    while not stop.wait(0.5):
        pass
